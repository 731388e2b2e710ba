"""Publishing test traffic at a steady rate (so kills and outages happen mid-stream)."""

from __future__ import annotations

import asyncio

from cdr_mediation.stack.pipeline import LocalPipeline


async def publish_steadily(run: LocalPipeline, documents: list[bytes], ids: list[str], *, per_s: int) -> None:
    chunk = max(1, per_s // 10)
    loop = asyncio.get_running_loop()
    began = loop.time()
    for n in range(0, len(documents), chunk):
        await run.publish(documents[n:n + chunk], msg_ids=ids[n:n + chunk])
        ahead = (n + chunk) / per_s - (loop.time() - began)
        if ahead > 0:
            await asyncio.sleep(ahead)  # pacing the publisher, not waiting for a condition
