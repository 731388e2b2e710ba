"""Chaos: SIGKILL ingest/store workers at random moments while DLRs flow; the result must not change.

Two worker processes share the partitions. One, later the other, is killed with SIGKILL (no
chance to commit, flush or leave the group) and restarted, at least five times, while 20,000 DLRs
flow. Afterwards every DLR is exactly one CDR, every chain verifies, and every chain head equals
the head of an uninterrupted run over the same DLR log (a fresh replay of the DLR topic).
Set CDRMED_CHAOS_SEED to reproduce a run; the seed is printed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import shutil
import time

import pytest

from cdr_mediation.domain.synthetic import synthetic_dlrs
from cdr_mediation.stack.pipeline import LocalPipeline
from tests.integration.support.forensics import write_forensics
from tests.integration.support.observe import assert_chains_exact, expected_cdr_ids, stored_cdr_ids, wait_stored
from tests.integration.support.supervise import restart_exited
from tests.integration.support.traffic import publish_steadily

START = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
DLRS = 20_000
KILLS = 5


@pytest.mark.slow
async def test_sigkill_workers_mid_stream_changes_nothing(stack_env, tmp_path):
    seed = int(os.environ.get("CDRMED_CHAOS_SEED", time.time_ns() % 1_000_000))
    print(f"CDRMED_CHAOS_SEED={seed}")
    rng = random.Random(seed)
    run = LocalPipeline(stack_env, tmp_path, operators=6, partitions=4)
    run.expect_exits = True  # killed workers are expected; wait_stored must not treat them as failures
    supervisor: asyncio.Task | None = None
    try:
        run.start("bridge", "bridge")
        workers = ["worker-a", "worker-b"]
        for name in workers:
            run.start(name, "worker")
        self_stops: list[str] = []
        supervisor = asyncio.create_task(restart_exited(run, workers, self_stops))
        traffic = list(synthetic_dlrs(seed=seed, start=START, count=DLRS, operators=run.operators,
                                      id_prefix=f"{run.namespace}-chaos"))
        documents = [json.dumps(d).encode() for d in traffic]
        publisher = asyncio.create_task(publish_steadily(run, documents, [d["dlr_id"] for d in traffic], per_s=500))
        await wait_stored(run, 500, timeout=180, what="pipeline warm")

        kills = []
        while len(kills) < KILLS or not publisher.done():
            await asyncio.sleep(rng.uniform(2.0, 6.0))
            victim = workers[len(kills) % 2]
            run.kill(victim)  # SIGKILL
            if rng.random() < 0.5:
                # Sometimes the replacement also loses its local RocksDB: state from changelogs only.
                shutil.rmtree(run.work_dir / f"{victim}-data", ignore_errors=True)
            run.start(victim, "worker")
            kills.append((round(asyncio.get_running_loop().time(), 1), victim))
            if len(kills) >= 12:
                break
        await publisher
        print(f"kills: {kills}")
        assert len(kills) >= KILLS

        expected = expected_cdr_ids(run, documents)
        try:
            await wait_stored(run, len(expected), timeout=600, what="all CDRs after the kills", stall_s=180)
            stored = await stored_cdr_ids(run)
            assert len(stored) == len(set(stored)), "a CDR was stored twice"
            assert set(stored) == expected, f"lost {len(expected - set(stored))}, unexpected {len(set(stored) - expected)}"
            await assert_chains_exact(run)
        except AssertionError as failure:
            raise AssertionError(f"{failure}\n{await write_forensics(run)}") from failure
        print(f"self-stopped and restarted: {self_stops}")
    finally:
        if supervisor is not None:
            supervisor.cancel()
        run.stop_all()

