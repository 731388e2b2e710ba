"""`cdrmed bench rollup`: the rollup agent alone over CDRs already in the topic.

Builds N chained CDR entries with the domain code (synthetic DLRs across 8 operators, priced and
chained exactly as the ingest agent would), writes them to a fresh namespaced CDR topic as
cdr-batch records, then starts one worker running only the rollup agent (alone in its consumer
group: `CDR_WORKER_SOLO`) and times it from its first applied entry to its last, read from its
Prometheus counter. Closes go to the rollup-closed topic as in production (no store runs).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from pathlib import Path

import aiohttp
from aiokafka import AIOKafkaProducer

from cdr_mediation.codecs.records import encode_cdr_records
from cdr_mediation.domain.ingest import OperatorIngestState, apply_batch
from cdr_mediation.domain.pricing import load_snapshot
from cdr_mediation.domain.synthetic import synthetic_dlrs
from cdr_mediation.stack.manager import Stack
from cdr_mediation.stack.pipeline import LocalPipeline
from cdr_mediation.stack.process import free_port
from cdr_mediation.tables.rollup import ROLLUP_TABLE
from cdr_mediation.topology.admin import ensure_topics
from cdr_mediation.topology.topics import all_topics

START = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
ENTRIES_PER_RECORD = 500


def chained_records(pipeline: LocalPipeline, events: int) -> list[tuple[str, bytes]]:
    """(operator_id, cdr-batch record) in each operator's chain order, spread over 6 hours."""
    pricing = load_snapshot(Path(pipeline.env["CDR_PRICING_FILE"]).read_bytes())
    by_operator: dict[str, list[bytes]] = {}
    for document in synthetic_dlrs(seed=7, start=START, count=events, operators=pipeline.operators,
                                   spacing_ms=max(1, 6 * 3_600_000 // events), id_prefix=pipeline.namespace):
        by_operator.setdefault(document["operator_id"], []).append(json.dumps(document).encode())
    records = []
    for operator_id, raws in by_operator.items():
        state = OperatorIngestState.initial(operator_id)
        for offset, start in enumerate(range(0, len(raws), ENTRIES_PER_RECORD)):
            outcome = apply_batch(state, raws[start:start + ENTRIES_PER_RECORD], offset, pricing, lambda _: None)
            state = outcome.new_state
            pairs = [(entry, linked.record_hash) for entry, linked in zip(outcome.entries, outcome.cdrs)]
            records += [(operator_id, value) for value in encode_cdr_records(pairs)]
    return records


async def _applied(session: aiohttp.ClientSession, port: int) -> float:
    try:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
    except aiohttp.ClientError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("cdr_rollup_entries_total "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def run_rollup_bench(state_dir: Path, events: int, *, partitions: int = 4, timeout: float = 900) -> dict:
    stack = Stack(state_dir)
    stack.up()
    pipeline = LocalPipeline(stack.settings_env(), state_dir / "bench-rollup", operators=8, partitions=partitions)
    records = chained_records(pipeline, events)
    metrics_port = free_port()
    # The records go in before the worker starts, so it is timed on a full topic.
    await ensure_topics(pipeline.env["CDR_KAFKA_BOOTSTRAP"],
                        all_topics(pipeline.env["CDR_APP_ID"], (ROLLUP_TABLE,), prefix=pipeline.env["CDR_TOPIC_PREFIX"]),
                        keyed_partitions=partitions, replication_factor=1)
    producer = AIOKafkaProducer(bootstrap_servers=pipeline.env["CDR_KAFKA_BOOTSTRAP"], acks="all",
                                enable_idempotence=False, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(pipeline.topic("cdr.v1"), key=op.encode(), value=value) for op, value in records]
        for future in futures:
            await future
    finally:
        await producer.stop()
    try:
        pipeline.start("worker", "worker", CDR_WORKER_AGENTS="rollup", CDR_WORKER_SOLO="true",
                       CDR_METRICS_PORT=str(metrics_port))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        first = None
        async with aiohttp.ClientSession() as session:
            while True:
                applied = await _applied(session, metrics_port)
                now = time.monotonic()
                if applied and first is None:
                    first = (now, applied)
                if applied >= events:
                    break
                if loop.time() > deadline:
                    raise TimeoutError(f"rollup agent applied {applied:.0f} of {events} entries in {timeout}s")
                await asyncio.sleep(0.05)
    finally:
        pipeline.stop_all()
    seconds = now - first[0]
    counted = events - first[1]  # entries applied after the first sample
    return {"events": events, "seconds": round(seconds, 3), "events_per_s": round(counted / seconds, 1),
            "records": len(records), "partitions": partitions}
