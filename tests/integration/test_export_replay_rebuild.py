"""Rebuild after a replay into fresh state: the DLR topic of a pipeline whose export was
delivered, acknowledged and archived is replayed, record for record, into a second pipeline with
fresh Faust state and a fresh PostgreSQL database. That pipeline's export must be the very same
file (the regulator reports it already holds those bytes, the archive that it already holds
those objects), and `cdrmed export rebuild` from the fresh database matches the archive byte for
byte."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from cdr_mediation.domain.synthetic import synthetic_dlrs
from cdr_mediation.stack.pipeline import LocalPipeline
from tests.integration.support.observe import expected_cdr_ids, read_topic, wait_stored
from tests.integration.support.processes import eventually

DAY = dt.datetime(2026, 10, 24, tzinfo=dt.timezone.utc)
AGENTS = "ingest,store,rollup,rollup-store,exporter"
FAST = {"CDR_EXPORT_POLL_INTERVAL_S": "0.5", "CDR_EXPORT_RETRY_BASE_S": "0.5"}


async def _steps(dsn: str, operator_id: str) -> list[tuple[str, dict]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT event, detail FROM export_transition WHERE operator_id = $1 AND day = $2 "
                                "ORDER BY step", operator_id, DAY.date())
    finally:
        await conn.close()
    return [(r["event"], json.loads(r["detail"])) for r in rows]


async def _archived(dsn: str, operator_id: str) -> dict[str, str] | None:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT object_key, sha256 FROM export_archive WHERE operator_id = $1", operator_id)
    finally:
        await conn.close()
    return {r["object_key"]: r["sha256"] for r in rows} if len(rows) == 5 else None


def _tick(env: dict[str, str], operator_id: str) -> None:
    result = subprocess.run([sys.executable, "-m", "cdr_mediation.cli", "clock", "tick", "--at",
                             (DAY + dt.timedelta(days=1, hours=2, minutes=1)).isoformat(), "--allow-future",
                             "--operator", operator_id], env={**os.environ, **env}, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


async def _reached(dsn: str, operator_id: str, event: str):
    steps = await _steps(dsn, operator_id)
    return steps if any(e == event for e, _ in steps) else None


@pytest.mark.slow
async def test_a_replay_into_fresh_state_exports_the_same_file_and_rebuilds_it_exactly(stack_env, stack, tmp_path):
    live = LocalPipeline(stack_env, tmp_path, operators=1, partitions=2)
    (operator_id,) = live.operators
    replay = None
    try:
        live.start("bridge", "bridge")
        worker = live.start("worker", "worker", CDR_WORKER_AGENTS=AGENTS, **FAST)
        traffic = list(synthetic_dlrs(seed=41, start=DAY + dt.timedelta(hours=6), count=400, operators=live.operators,
                                      spacing_ms=100_000, id_prefix=f"{live.namespace}-rp"))
        documents = [json.dumps(d).encode() for d in traffic]
        await live.publish(documents, msg_ids=[d["dlr_id"] for d in traffic])
        await wait_stored(live, len(expected_cdr_ids(live, documents)), timeout=240)
        _tick(live.env, operator_id)
        live_steps = await eventually(lambda: _reached(live.env["CDR_PG_DSN"], operator_id, "acked"), timeout=240,
                                      what="the live export ACKED", log=live.log_path("worker"), alive=worker)
        live_archive = await eventually(lambda: _archived(live.env["CDR_PG_DSN"], operator_id), timeout=120,
                                        what="the live export archived")
        live.stop_all()

        # Fresh state: another app id (empty tables and changelogs), other topics, an empty
        # database; the live DLR topic's records copied into its DLR topic unchanged.
        fresh_dsn = await stack.components["postgres"].fresh_database(f"cdr_{live.namespace}_replay")
        replay = LocalPipeline(stack_env, tmp_path, operators=1, partitions=2,
                               extra_env={"CDR_PG_DSN": fresh_dsn, "CDR_PRICING_FILE": live.env["CDR_PRICING_FILE"],
                                          "CDR_EXPORT_CONFIG_FILE": live.env["CDR_EXPORT_CONFIG_FILE"]})
        worker = replay.start("worker", "worker", CDR_WORKER_AGENTS=AGENTS, **FAST)
        records = await read_topic(stack_env["CDR_KAFKA_BOOTSTRAP"], live.topic("dlr.v1"))
        assert records
        await eventually(lambda: _topic_exists(stack_env["CDR_KAFKA_BOOTSTRAP"], replay.topic("dlr.v1")), timeout=120,
                         what="the replay's topics", log=replay.log_path("worker"), alive=worker)
        producer = AIOKafkaProducer(bootstrap_servers=stack_env["CDR_KAFKA_BOOTSTRAP"], acks="all")
        await producer.start()
        try:
            for record in records:
                await producer.send_and_wait(replay.topic("dlr.v1"), record.value, key=record.key,
                                             partition=record.partition)
        finally:
            await producer.stop()
        # The clock tick is an input of its own (the CDR topic, not the DLR topic): it comes after
        # every replayed CDR, as it did live, or the day would close earlier than it did.
        live_count = await _cdr_count(live.env["CDR_PG_DSN"], operator_id)
        await eventually(lambda: _cdr_count_is(fresh_dsn, operator_id, live_count), timeout=240,
                         what="every replayed CDR stored", log=replay.log_path("worker"), alive=worker)
        _tick(replay.env, operator_id)

        replay_steps = await eventually(lambda: _reached(fresh_dsn, operator_id, "delivered"), timeout=240,
                                        what="the replayed export delivered", log=replay.log_path("worker"),
                                        alive=worker)
        built_live, built_replay = live_steps[0][1], replay_steps[0][1]
        assert built_replay["zip_sha256"] == built_live["zip_sha256"]
        assert built_replay["checkpoint"] == built_live["checkpoint"]
        delivered = dict(replay_steps)["delivered"]
        assert (delivered["outcome"], delivered["signature"]["outcome"]) == ("already_delivered", "already_delivered")
        replay_archive = await eventually(lambda: _archived_four(fresh_dsn, operator_id), timeout=120,
                                          what="the replay's archive records")
        assert replay_archive.items() <= live_archive.items()  # the same objects, already archived

        rebuild = subprocess.run([sys.executable, "-m", "cdr_mediation.cli", "export", "rebuild", "--operator",
                                  operator_id, "--day", DAY.date().isoformat()],
                                 env={**os.environ, **replay.env}, capture_output=True, text=True, timeout=300)
        assert rebuild.returncode == 0, rebuild.stdout + rebuild.stderr
        report = [json.loads(line) for line in rebuild.stdout.splitlines()]
        assert [e["result"] for e in report[:-1]] == ["identical"] * 4
    finally:
        live.stop_all()
        if replay is not None:
            replay.stop_all()


async def _archived_four(dsn: str, operator_id: str) -> dict[str, str] | None:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT object_key, sha256 FROM export_archive WHERE operator_id = $1", operator_id)
    finally:
        await conn.close()
    return {r["object_key"]: r["sha256"] for r in rows} if len(rows) >= 4 else None


async def _cdr_count(dsn: str, operator_id: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT count(*) FROM cdr WHERE operator_id = $1", operator_id)
    finally:
        await conn.close()


async def _cdr_count_is(dsn: str, operator_id: str, count: int) -> bool:
    return await _cdr_count(dsn, operator_id) == count


async def _topic_exists(bootstrap: str, topic: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return topic in await admin.list_topics()
    finally:
        await admin.close()
