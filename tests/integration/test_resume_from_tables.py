"""The ingest and rollup steps resume where their tables stand, not where the consumer group
committed; and a table restored from a changelog never takes a late stale state over a newer one.

The two differ when a worker's table is restored from a changelog that lacks its newest states
while the group's committed offset has moved past the records those states covered (a stale
restore; a worker that died between its commit and its data directory's last write). Resuming
at the committed offset would chain the next records from a stale head: a fork, and the records
in between never become CDRs. The scenario is built exactly: the table's changelog covers the
first half of the traffic, the group's commit covers all of it, and the worker starts with an
empty data directory.

The same holds for the CDR topic, whose position the rollup table decides (the store step in the
same agent absorbs re-delivered records by key).

The tests restart a worker over a backlog, which is also the situation in which Faust delivered
records during its end-of-recovery seek and then dropped them from the agents' queues
(topology/transport.py, point 3): before that was fixed, the second test lost CDR records or
stalled the ingest agent in about every third run.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections import Counter
from collections import defaultdict

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.structs import TopicPartition

import aiohttp

from cdr_mediation.codecs.records import decode_cdr_topic_record, decode_dlr_batch
from cdr_mediation.domain.synthetic import synthetic_dlrs
from cdr_mediation.stack.pipeline import LocalPipeline
from cdr_mediation.stack.process import free_port
from cdr_mediation.tables.ingest import INGEST_TABLE, STATE_PREFIX
from tests.integration.support.forensics import committed_offsets, write_forensics
from tests.integration.support.observe import (
    assert_chains_exact,
    expected_cdr_ids,
    read_topic,
    stored_cdr_ids,
    wait_stored,
)
from tests.integration.support.processes import eventually

START = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
HALF = 1500


def _traffic(run: LocalPipeline, count: int) -> tuple[list[bytes], list[str]]:
    traffic = list(synthetic_dlrs(seed=7, start=START, count=count, operators=run.operators,
                                  id_prefix=f"{run.namespace}-resume"))
    return [json.dumps(d).encode() for d in traffic], [d["dlr_id"] for d in traffic]


async def _stop_and_forget(run: LocalPipeline, name: str) -> None:
    """SIGTERM (the worker leaves its group) and an empty data directory for whoever comes next."""
    assert run.kill(name, 15) == 0
    del run.processes[name]  # stopped on purpose
    shutil.rmtree(run.work_dir / f"{name}-data")


async def _commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    """Commit for `group` as a member that owned every partition would have."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                partition_assignment_strategy=(_AsFaust,))
    await consumer.start()
    try:
        consumer.subscribe(topics=sorted({tp.topic for tp in offsets}))
        await eventually(_assigned(consumer, set(offsets)), timeout=60, what="the group assigns every partition")
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


class _AsFaust(RoundRobinPartitionAssignor):
    """The broker keeps a group's assignment protocol name (Faust's) and refuses members that
    offer another one; the assignment itself is ours to make, the only member."""

    name = "faust"


def _assigned(consumer: AIOKafkaConsumer, wanted: set[TopicPartition]):
    async def probe() -> bool:
        await consumer.getmany(timeout_ms=200, max_records=1)  # drives the group protocol
        return wanted <= consumer.assignment()
    return probe


async def _first_half_stored_then_stopped(run: LocalPipeline, documents: list[bytes], ids: list[str]) -> None:
    """Bridge and worker up, the first half stored; the worker then stopped, its data directory gone."""
    run.start("bridge", "bridge")
    run.start("worker", "worker")
    await run.publish(documents[:HALF], msg_ids=ids[:HALF])
    await wait_stored(run, HALF, timeout=180, what="first half")
    await _stop_and_forget(run, "worker")


def _log_ends(topic: str, records) -> dict[TopicPartition, int]:
    """Per partition of `topic`, the offset after the last of `records` (where a commit of all would be)."""
    ends: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(topic, record.partition)
        ends[tp] = max(ends.get(tp, 0), record.offset + 1)
    return ends


async def test_ingest_resumes_from_its_table_when_the_committed_offset_is_ahead(pipeline):
    run = pipeline()
    bootstrap, group, dlr_topic = run.env["CDR_KAFKA_BOOTSTRAP"], run.env["CDR_APP_ID"], run.topic("dlr.v1")
    documents, ids = _traffic(run, 2 * HALF)

    await _first_half_stored_then_stopped(run, documents, ids)

    await run.publish(documents[HALF:], msg_ids=ids[HALF:])

    async def all_forwarded():
        records = await read_topic(bootstrap, dlr_topic)
        return records if sum(len(decode_dlr_batch(r.value)) for r in records) >= 2 * HALF else None

    records = await eventually(all_forwarded, timeout=120, what="every DLR forwarded to Kafka")
    ends = _log_ends(dlr_topic, records)
    await _commit(bootstrap, group, ends)
    committed = (await committed_offsets(bootstrap, group, [dlr_topic]))[dlr_topic]
    assert {p: o for p, o in committed.items() if o is not None} == {tp.partition: o for tp, o in ends.items()}, (
        "the scenario needs the group's commit at the end of every partition")

    # Empty data directory: the table comes back from its changelog, which holds the first half.
    run.start("worker-2", "worker")
    await wait_stored(run, 2 * HALF, timeout=180, stall_s=60, what="second half, resumed from the table")
    stored = await stored_cdr_ids(run)
    assert len(stored) == len(set(stored)), "a CDR was stored twice"
    assert set(stored) == expected_cdr_ids(run, documents)
    await assert_chains_exact(run)


async def test_a_stale_state_appended_to_the_changelog_is_not_restored_over_the_newer_one(pipeline):
    """What a worker that lost its partition without noticing does: it finishes a batch and sends
    that batch's state after the new owner has sent newer ones. Restored last-write-wins, the
    operator's head would move back while the partition resumes after the newer records — a fork."""
    run = pipeline(operators=12)  # 12 operators on 4 partitions: some partition holds several
    bootstrap, changelog = run.env["CDR_KAFKA_BOOTSTRAP"], INGEST_TABLE.changelog(run.env["CDR_APP_ID"]).name
    documents, ids = _traffic(run, 3 * HALF)
    run.start("bridge", "bridge")
    run.start("worker", "worker")
    for wave, stored in ((slice(0, HALF), HALF), (slice(HALF, 2 * HALF), 2 * HALF)):  # >= 2 states each
        await run.publish(documents[wave], msg_ids=ids[wave])
        await wait_stored(run, stored, timeout=180, what=f"{stored} stored")
    await _stop_and_forget(run, "worker")

    states: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))  # partition → operator → versions
    for record in await read_topic(bootstrap, changelog):
        key = orjson.loads(record.key)
        if key.startswith(STATE_PREFIX) and record.value is not None:
            states[record.partition][key].append((record.key, record.value, orjson.loads(record.value)))
    # An operator whose newest state is not the newest of its partition, so resuming the partition
    # would pass over its records, and with an older version to send late.
    stale = None
    for partition, by_key in states.items():
        newest = max(versions[-1][2]["applied_offset"] for versions in by_key.values())
        for versions in by_key.values():
            if versions[-1][2]["applied_offset"] < newest and len(versions) >= 2:
                stale = partition, versions[0]
    assert stale is not None, "the scenario needs two operators on one partition, each with two states"
    partition, (raw_key, raw_value, value) = stale
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(changelog, key=raw_key, value=raw_value, partition=partition)
    finally:
        await producer.stop()

    await run.publish(documents[2 * HALF:], msg_ids=ids[2 * HALF:])
    run.start("worker-2", "worker")  # empty data directory: restores from the changelog
    try:
        await wait_stored(run, 3 * HALF, timeout=180, stall_s=60, what="third wave after the restore")
    except AssertionError as failure:
        raise AssertionError(f"{failure}\n{await write_forensics(run)}") from failure
    stored = await stored_cdr_ids(run)
    assert len(stored) == len(set(stored)) and set(stored) == expected_cdr_ids(run, documents)
    await assert_chains_exact(run)
    assert "a stale state in a changelog was not applied" in run.log_path("worker-2").read_text(), (
        f"the restore must have met the stale state of {value['operator_id']}")


async def test_store_and_rollups_resume_from_the_rollup_table_when_the_cdr_commit_is_ahead(pipeline):
    """The second half becomes CDRs while no store or rollup step runs; the group's commit on the
    CDR topic is then moved to its end (as a store + rollup worker that died after committing
    but whose changelog writes were lost would leave it), and a worker with an empty data
    directory takes over: it must store and roll up the second half."""
    run = pipeline()
    bootstrap, group, cdr_topic = run.env["CDR_KAFKA_BOOTSTRAP"], run.env["CDR_APP_ID"], run.topic("cdr.v1")
    documents, ids = _traffic(run, 2 * HALF)
    await _first_half_stored_then_stopped(run, documents, ids)

    run.start("ingest", "worker", CDR_WORKER_AGENTS="ingest")
    await run.publish(documents[HALF:], msg_ids=ids[HALF:])

    async def all_chained():
        records = await read_topic(bootstrap, cdr_topic)
        entries = sum(len(decoded) for decoded in map(decode_cdr_topic_record, (r.value for r in records))
                      if isinstance(decoded, list))
        return records if entries >= 2 * HALF else None

    records = await eventually(all_chained, timeout=120, what="every CDR in the CDR topic")
    await _stop_and_forget(run, "ingest")
    ends = _log_ends(cdr_topic, records)
    await _commit(bootstrap, group, ends)
    assert len(await stored_cdr_ids(run)) == HALF, "nothing of the second half may be stored yet"

    web_port = free_port()
    run.start("worker-2", "worker", CDR_WORKER_WEB_PORT=str(web_port))
    await wait_stored(run, 2 * HALF, timeout=180, stall_s=60, what="second half, resumed from the rollup table")
    await assert_chains_exact(run)
    highest = {op: max(seqs) for op, seqs in _stored_seqs(records).items()}

    async def rolled_up():
        async with aiohttp.ClientSession() as session:
            for operator_id, top in highest.items():
                async with session.get(f"http://127.0.0.1:{web_port}/rollups/open/{operator_id}") as response:
                    if response.status != 200 or (await response.json())["last_chain_seq"] != top:
                        return False
        return True

    await eventually(rolled_up, timeout=60, what="every operator's rollup at its last chain_seq",
                     log=run.log_path("worker-2"))


def _stored_seqs(records) -> dict[str, list[int]]:
    seqs: dict[str, list[int]] = {}
    for record in records:
        decoded = decode_cdr_topic_record(record.value)
        if isinstance(decoded, list):
            seqs.setdefault(record.key.decode(), []).extend(entry["chain_seq"] for entry, _ in decoded)
    return seqs
