"""Chaos for rollups: three workers SIGKILLed repeatedly mid-window; the hours must not change.

50,000 DLRs across 8 operators and 6 hours of event time flow while worker processes (each
running every agent) are killed with SIGKILL and restarted — sometimes with their RocksDB
wiped, so the rollup state comes back from its changelog only. Afterwards a clock tick closes
every hour of the day and the day itself, and then: every closed hour equals the recomputation
from the CDRs stored in PostgreSQL (`cdrmed reconcile` per operator over the day), each hour was
closed exactly once (revision 0 only: nothing was later than the grace), and each operator's day
was closed once, at its full chain (re-emissions, if any, byte-identical). Set CDRMED_CHAOS_SEED to reproduce a run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
import time

import asyncpg
import pytest

from cdr_mediation.codecs.records import decode_day_closed
from cdr_mediation.domain.synthetic import synthetic_dlrs
from cdr_mediation.stack.pipeline import LocalPipeline
from tests.integration.support.forensics import write_forensics
from tests.integration.support.observe import expected_cdr_ids, read_topic, stored_cdr_ids, wait_stored
from tests.integration.support.processes import eventually
from tests.integration.support.supervise import restart_exited
from tests.integration.support.traffic import publish_steadily

START = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
DLRS = 50_000
HOURS = 6
KILLS = 6


async def _closes(run: LocalPipeline) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(run.env["CDR_PG_DSN"])
    try:
        return await conn.fetch(
            "SELECT operator_id, hour_start, revision, records FROM rollup_closed WHERE operator_id LIKE $1",
            f"{run.namespace}-%")
    finally:
        await conn.close()


async def _wait_closed(run: LocalPipeline, hours: int, timeout: float) -> list[asyncpg.Record]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        closes = await _closes(run)
        if len({(c["operator_id"], c["hour_start"]) for c in closes}) >= hours * len(run.operators):
            return closes
        if loop.time() > deadline:
            raise AssertionError(f"{len(closes)} closes of {hours * len(run.operators)} hours after {timeout}s; "
                                 f"logs in {run.work_dir}")
        await asyncio.sleep(0.5)


async def _assert_each_day_closed_once_at_its_full_chain(run: LocalPipeline) -> None:
    conn = await asyncpg.connect(run.env["CDR_PG_DSN"])
    try:
        heads = {row["operator_id"]: row["head"] for row in await conn.fetch(
            "SELECT operator_id, max(chain_seq) AS head FROM cdr WHERE operator_id LIKE $1 GROUP BY operator_id",
            f"{run.namespace}-%")}
    finally:
        await conn.close()
    async def every_operators_day():  # sent before the closing state is written; wait for all
        records = await read_topic(run.env["CDR_KAFKA_BOOTSTRAP"], run.topic("day.closed.v1"))
        days = [decode_day_closed(r.value) for r in records]
        return days if {d.operator_id for d in days} == set(run.operators) else None

    days = await eventually(every_operators_day, timeout=120, what="a day-closed record of every operator")
    by_key: dict[tuple[str, str], set] = {}
    for day in days:
        by_key.setdefault(day.key, set()).add(day)
    assert sorted(by_key) == sorted((op, START.date().isoformat()) for op in run.operators), by_key.keys()
    for (operator_id, _), versions in by_key.items():
        assert len(versions) == 1, f"{operator_id}: day closed with different values {versions}"
        (day,) = versions
        assert (day.closed_by, day.chain_head_seq, day.day_sequence) == ("tick", heads[operator_id], 1), day


def _cdrmed(run: LocalPipeline, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cdr_mediation.cli", *args], env={**os.environ, **run.env},
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
async def test_sigkill_workers_mid_window_changes_no_rollup(stack_env, tmp_path):
    seed = int(os.environ.get("CDRMED_CHAOS_SEED", time.time_ns() % 1_000_000))
    print(f"CDRMED_CHAOS_SEED={seed}")
    rng = random.Random(seed)
    run = LocalPipeline(stack_env, tmp_path, operators=8, partitions=4)
    run.expect_exits = True
    supervisor: asyncio.Task | None = None
    try:
        run.start("bridge", "bridge")
        workers = ["worker-a", "worker-b", "worker-c"]
        for name in workers:
            run.start(name, "worker")
        self_stops: list[str] = []
        supervisor = asyncio.create_task(restart_exited(run, workers, self_stops))
        spacing_ms = HOURS * 3_600_000 // DLRS  # event time spans the six hours
        traffic = list(synthetic_dlrs(seed=seed, start=START, count=DLRS, operators=run.operators,
                                      spacing_ms=spacing_ms, id_prefix=f"{run.namespace}-rollup"))
        documents = [json.dumps(d).encode() for d in traffic]
        publisher = asyncio.create_task(publish_steadily(run, documents, [d["dlr_id"] for d in traffic], per_s=1000))
        await wait_stored(run, 500, timeout=180, what="pipeline warm")

        kills = []
        while len(kills) < KILLS or not publisher.done():
            await asyncio.sleep(rng.uniform(3.0, 8.0))
            victim = rng.choice(workers)
            run.kill(victim)  # SIGKILL
            if rng.random() < 0.4:
                shutil.rmtree(run.work_dir / f"{victim}-data", ignore_errors=True)
            run.start(victim, "worker")
            kills.append(victim)
            if len(kills) >= 14:
                break
        await publisher
        print(f"kills: {kills}")

        try:
            expected = expected_cdr_ids(run, documents)
            await wait_stored(run, len(expected), timeout=600, what="all CDRs after the kills", stall_s=180)
            assert len(set(await stored_cdr_ids(run))) == len(expected)

            # The clock closes every hour of the day and the day: past its end plus the grace (2 h).
            end = START + dt.timedelta(days=1, hours=2, minutes=1)
            ticked = _cdrmed(run, "clock", "tick", "--at", end.isoformat(), "--allow-future",  # synthetic time
                             *[arg for op in run.operators for arg in ("--operator", op)])
            assert ticked.returncode == 0, ticked.stderr
            closes = await _wait_closed(run, 24, timeout=300)

            keys = [(c["operator_id"], c["hour_start"], c["revision"]) for c in closes]
            assert len(keys) == len(set(keys))
            assert {c["revision"] for c in closes} == {0}, "an hour was closed more than once"
            assert sum(c["records"] for c in closes) == len(expected)
            await _assert_each_day_closed_once_at_its_full_chain(run)

            for operator_id in run.operators:
                reconcile = _cdrmed(run, "reconcile", "--day", START.date().isoformat(), "--operator", operator_id)
                assert reconcile.returncode == 0, f"{operator_id}: rollups differ from the CDRs:\n{reconcile.stdout}"
        except AssertionError as failure:
            raise AssertionError(f"{failure}\n{await write_forensics(run)}") from failure
        print(f"self-stopped and restarted: {self_stops}")
    finally:
        if supervisor is not None:
            supervisor.cancel()
        run.stop_all()
