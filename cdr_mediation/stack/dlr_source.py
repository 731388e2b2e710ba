"""A stand-in for upstream dlr-processor: publishes synthetic DLRs to NATS JetStream.

Each DLR is published to `dlr.v1.<operator_id>` with `Nats-Msg-Id = dlr_id`, as the upstream
contract says, at a steady rate; JetStream acknowledges each publish (nothing is fire-and-forget).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time

from prometheus_client import Counter

from cdr_mediation.domain.synthetic import synthetic_dlrs
from cdr_mediation.infra.nats import DlrInbox, connect, ensure_dlr_stream

log = logging.getLogger(__name__)

PUBLISHED = Counter("cdr_generator_dlrs_published_total", "Synthetic DLRs acknowledged by JetStream")


async def publish_dlrs(
    nats_url: str, *, inbox: DlrInbox, seed: int, start: dt.datetime, count: int | None, rate_per_s: float,
    stop: asyncio.Event | None = None,
) -> int:
    """Publish until `count` is reached or `stop` is set; returns how many JetStream acked."""
    nc = await connect(nats_url, name="cdrmed-generate")
    js = nc.jetstream()
    await ensure_dlr_stream(js, inbox)
    sent = 0
    began = time.monotonic()
    try:
        for dlr in synthetic_dlrs(seed=seed, start=start, count=count):
            if stop is not None and stop.is_set():
                break
            await js.publish(inbox.subject(dlr["operator_id"]), json.dumps(dlr).encode(),
                             headers={"Nats-Msg-Id": dlr["dlr_id"]})
            sent += 1
            PUBLISHED.inc()
            # Pace against the schedule (not per message), so rounding never accumulates.
            ahead = sent / rate_per_s - (time.monotonic() - began)
            if ahead > 0:
                await asyncio.sleep(ahead)
            if sent % 1000 == 0:
                log.info("dlrs published", extra={"published": sent})
    finally:
        await nc.drain()
    return sent
