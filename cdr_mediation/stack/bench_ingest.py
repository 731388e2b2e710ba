"""`cdrmed bench ingest`: DLRs published to NATS → CDR rows committed in PostgreSQL.

Starts a namespaced pipeline (bridge + Faust workers) on the local stack, warms it up, then
publishes N synthetic DLRs as fast as JetStream acknowledges them and waits until every one is a
committed row. Lag is per DLR: publish time → the row's `stored_at` (same machine clock).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import statistics
import time
from pathlib import Path

import asyncpg

from cdr_mediation.domain.synthetic import synthetic_dlrs
from cdr_mediation.stack.manager import Stack
from cdr_mediation.stack.pipeline import LocalPipeline

START = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)


async def _stored(conn, operators) -> int:
    return await conn.fetchval("SELECT count(*) FROM cdr WHERE operator_id = ANY($1::text[])", list(operators))


async def _wait_for(conn, operators, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (stored := await _stored(conn, operators)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {stored} of {count} CDRs stored after {timeout}s")
        await asyncio.sleep(0.2)


async def run_ingest_bench(state_dir: Path, dlrs: int, *, workers: int = 1, partitions: int = 4,
                           timeout: float = 1800) -> dict:
    stack = Stack(state_dir)
    stack.up()
    pipeline = LocalPipeline(stack.settings_env(), state_dir / "bench", operators=8, partitions=partitions)
    conn = await asyncpg.connect(pipeline.env["CDR_PG_DSN"])
    try:
        pipeline.start("bridge", "bridge")
        for n in range(workers):
            pipeline.start(f"worker-{n}", "worker")
        # Warm-up: the group has formed and every stage has run once before the clock starts.
        warmup = [json.dumps(d).encode() for d in synthetic_dlrs(seed=0, start=START, count=200,
                                                                   operators=pipeline.operators,
                                                                   id_prefix=f"{pipeline.namespace}-warmup")]
        await pipeline.publish(warmup)
        await _wait_for(conn, pipeline.operators, len(warmup), timeout=180)

        documents = [d for d in synthetic_dlrs(seed=1, start=START, count=dlrs, operators=pipeline.operators,
                                                   id_prefix=pipeline.namespace)]
        ids = [d["dlr_id"] for d in documents]
        began = time.time()
        published_at = await pipeline.publish([json.dumps(d).encode() for d in documents], msg_ids=ids)
        await _wait_for(conn, pipeline.operators, len(warmup) + dlrs, timeout=timeout)
        rows = await conn.fetch(
            "SELECT dlr_id, extract(epoch FROM stored_at) AS stored FROM cdr WHERE dlr_id = ANY($1::text[])", ids)
    finally:
        await conn.close()
        pipeline.stop_all()
    stored = {r["dlr_id"]: float(r["stored"]) for r in rows}
    lags = sorted(stored[i] - t for i, t in zip(ids, published_at))
    seconds = max(stored.values()) - began
    return {
        "dlrs": dlrs,
        "seconds": round(seconds, 3),
        "dlr_per_s": round(dlrs / seconds, 1),
        "lag_p50_s": round(statistics.median(lags), 3),
        "lag_p99_s": round(lags[min(len(lags) - 1, int(len(lags) * 0.99))], 3),
        "workers": workers,
        "partitions": partitions,
    }
