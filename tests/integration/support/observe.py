"""Reading back what a pipeline produced: Kafka topics to their end, PostgreSQL rows, chain checks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from faust.types import TP

from cdr_mediation.agents.replay import replay_chain_heads
from cdr_mediation.agents.verifier import verify_stored_chains
from cdr_mediation.domain.dlr import InvalidDlr, parse_dlr
from cdr_mediation.domain.pricing import load_snapshot
from cdr_mediation.domain.projection import cdr_id_for
from cdr_mediation.infra.postgres.cdr_store import stored_heads
from cdr_mediation.stack.pipeline import LocalPipeline
from cdr_mediation.topology.transport import fetch_highwaters


async def query_rows(pipeline: LocalPipeline, sql: str, *args) -> list:
    """The rows of one query against the pipeline's PostgreSQL, on a connection of its own."""
    conn = await asyncpg.connect(pipeline.env["CDR_PG_DSN"])
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def read_topic(bootstrap: str, topic: str) -> list:
    """Every record of `topic`, partition by partition, up to the high watermark of now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return []
        listed = await consumer.end_offsets(tps)
        ends = await fetch_highwaters([bootstrap], {TP(tp.topic, tp.partition): listed[tp] for tp in tps})
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records = []
        for tp in tps:
            end = ends[TP(tp.topic, tp.partition)]
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                records += [r for r in batch.get(tp, []) if r.offset < end]
        return records
    finally:
        await consumer.stop()


def expected_cdr_ids(pipeline: LocalPipeline, documents: list[bytes]) -> set[str]:
    """What the contract says these publications must become: one CDR per valid, priced, first
    occurrence of a dlr_id (computed with the pure domain functions, not the pipeline)."""
    pricing = load_snapshot(Path(pipeline.env["CDR_PRICING_FILE"]).read_bytes())
    expected = set()
    for document in documents:
        try:
            dlr = parse_dlr(document)
            pricing.rate_for(dlr.operator_id, dlr.tenant_id, dlr.done_at)
        except (InvalidDlr, LookupError):
            continue
        expected.add(cdr_id_for(dlr.dlr_id))
    return expected


async def stored_cdr_ids(pipeline: LocalPipeline) -> list[str]:
    conn = await asyncpg.connect(pipeline.env["CDR_PG_DSN"])
    try:
        rows = await conn.fetch("SELECT cdr_id FROM cdr WHERE operator_id LIKE $1", f"{pipeline.namespace}-%")
    finally:
        await conn.close()
    return [r["cdr_id"] for r in rows]


async def wait_stored(pipeline: LocalPipeline, count: int, *, timeout: float, what: str = "CDRs stored",
                      stall_s: float | None = None) -> None:
    """Until `count` CDRs of the pipeline are stored. With `stall_s`, give up early when the count
    has not moved for that long (a lost record never arrives: no need to wait out `timeout`)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    stored, last_change, last_stored = 0, loop.time(), -1
    waited = f"after {timeout}s"
    while loop.time() < deadline:
        stored = len(await stored_cdr_ids(pipeline))
        if stored >= count:
            return
        if stored != last_stored:
            last_stored, last_change = stored, loop.time()
        elif stall_s is not None and loop.time() - last_change > stall_s:
            waited = f"and no progress for {stall_s}s"
            break
        dead = {name: p.returncode for name, p in pipeline.processes.items() if p.poll() is not None}
        if dead and not getattr(pipeline, "expect_exits", False):
            raise AssertionError(f"{what}: processes exited {dead}; see {pipeline.work_dir}")
        await asyncio.sleep(0.25)
    report = await pipeline_report(pipeline)
    raise AssertionError(f"{what}: {stored} of {count} {waited}; logs in {pipeline.work_dir}\n{report}")


async def pipeline_report(pipeline: LocalPipeline) -> str:
    """Where a stalled pipeline stands: per topic partition, the log end and the group's commit."""
    bootstrap = pipeline.env["CDR_KAFKA_BOOTSTRAP"]
    lines = []
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=pipeline.env["CDR_APP_ID"],
                                enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        for name in ("dlr.v1", "cdr.v1"):
            topic = pipeline.topic(name)
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            listed = await consumer.end_offsets(tps) if tps else {}
            ends = await fetch_highwaters([bootstrap], {TP(tp.topic, tp.partition): listed[tp] for tp in tps})
            for tp in tps:
                lines.append(f"{topic}[{tp.partition}] end={ends[TP(tp.topic, tp.partition)]} "
                             f"committed={await consumer.committed(tp)}")
    finally:
        await consumer.stop()
    return "\n".join(lines)


async def assert_chains_exact(pipeline: LocalPipeline) -> dict:
    """Every stored chain verifies, and equals the chain a fresh replay of the DLR topic builds."""
    conn = await asyncpg.connect(pipeline.env["CDR_PG_DSN"])
    try:
        operators = [op for op in pipeline.operators]
        results = await verify_stored_chains(conn, operators)
        heads = await stored_heads(conn, operators)
    finally:
        await conn.close()
    broken = [r for r in results if not r.ok]
    assert not broken, f"chain breaks: {[(r.operator_id, r.first_break) for r in broken]}"
    pricing = load_snapshot(Path(pipeline.env["CDR_PRICING_FILE"]).read_bytes())
    replayed = await replay_chain_heads(pipeline.env["CDR_KAFKA_BOOTSTRAP"], pipeline.topic("dlr.v1"), pricing,
                                        pipeline.work_dir / "replay")
    assert {op: (h.chain_seq, h.head_hash) for op, h in replayed.items()} == heads, (
        f"stored heads differ from a replay of the DLR topic: stored={json.dumps(heads)}"
    )
    return heads
