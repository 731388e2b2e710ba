"""Graceful shutdown: SIGTERM makes a worker finish, commit, leave its group and exit 0.

A worker that leaves its consumer group is off the broker's member list the moment it exits, so
its partitions move at once; one that does not keeps them until its session times out (10 s,
then a JoinGroup round). The rolling restart runs two workers while DLRs flow at a steady rate:
worker A gets SIGTERM, exits, the other takes over; A is started again and, once ready, the same
happens to B. Afterwards every accepted DLR is exactly one CDR and every chain equals a fresh
replay of the DLR topic (the checks of the SIGKILL chaos test).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal

from aiokafka.admin import AIOKafkaAdminClient

from cdr_mediation.domain.synthetic import synthetic_dlrs
from cdr_mediation.stack.pipeline import LocalPipeline
from tests.integration.support.observe import (assert_chains_exact, expected_cdr_ids, query_rows, stored_cdr_ids,
                                               wait_stored)
from tests.integration.support.processes import eventually, tail

START = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
PER_S = 100
EXIT_WITHIN_S = 30.0
# From the exit until every operator's chain grows again: one JoinGroup round (Tansu holds it
# for half the session timeout, 5 s) plus table recovery from standbys; measured 6-9 s here. A
# liveness bound with room for a loaded machine; that the member left is checked on the broker.
TAKEOVER_WITHIN_S = 30.0


async def test_a_worker_alone_in_its_group_leaves_it_on_sigterm(pipeline):
    """Alone, a worker's generation is 0 on Tansu, where aiokafka skipped LeaveGroup: it stayed
    listed (and its partitions held) for the session timeout after a clean exit."""
    run: LocalPipeline = pipeline(operators=2, partitions=2)
    run.start("worker-a", "worker")
    log = run.log_path("worker-a")
    await eventually(_ready_after(log, 0), timeout=120, what="worker-a ready", log=log, alive=run.processes["worker-a"])
    assert len(await _members(run)) == 1
    await _sigterm_and_wait(run, "worker-a")
    assert await _members(run) == [], "the stopped worker is still a member of its consumer group"


async def test_rolling_restart_with_sigterm_under_load_loses_and_doubles_nothing(pipeline):
    run: LocalPipeline = pipeline(operators=4, partitions=4)
    run.start("bridge", "bridge")
    for name in ("worker-a", "worker-b"):
        run.start(name, "worker")
    traffic = [json.dumps(d).encode() for d in synthetic_dlrs(seed=8, start=START, count=20_000,
                                                              operators=run.operators, id_prefix=f"{run.namespace}-gs")]
    stop_traffic = asyncio.Event()
    published: list[bytes] = []
    publisher = asyncio.create_task(_publish_until(run, traffic, published, stop_traffic))
    try:
        await wait_stored(run, 300, timeout=180, what="pipeline warm")
        for name in ("worker-a", "worker-b"):  # both in the group before the restart begins
            await eventually(_ready_after(run.log_path(name), 0), timeout=120, what=f"{name} ready",
                             log=run.log_path(name), alive=run.processes[name])
        measured = {}
        for victim in ("worker-a", "worker-b"):
            assert not publisher.done(), "traffic ended before the restart: not a restart under load"
            measured[victim] = await _restart_gracefully(run, victim)
        print(f"SIGTERM → exit, exit → every operator advancing again: {measured}")
    finally:
        stop_traffic.set()
        await publisher

    expected = expected_cdr_ids(run, published)
    assert len(expected) == len(published) > 2_000
    await wait_stored(run, len(expected), timeout=180, what="all CDRs after the rolling restart", stall_s=60)
    stored = await stored_cdr_ids(run)
    assert len(stored) == len(set(stored)), "a CDR was stored twice"
    assert set(stored) == expected, f"lost {len(expected - set(stored))}, unexpected {len(set(stored) - expected)}"
    await assert_chains_exact(run)


async def _restart_gracefully(run: LocalPipeline, name: str) -> dict:
    loop = asyncio.get_running_loop()
    signalled = loop.time()
    members = await _members(run)
    assert len(members) == 2, members
    await _sigterm_and_wait(run, name)
    exited = loop.time()
    # Off the member list at once: the broker moves its partitions now, not after its session.
    assert len(remaining := await _members(run)) == 1 and set(remaining) < set(members), (members, remaining)

    # While it is down, the other worker must chain and store every operator's new DLRs: it
    # holds all partitions. Heads read after the exit: the worker stored its last batches first.
    before = await _heads(run)
    await eventually(_all_advanced(run, before), timeout=TAKEOVER_WITHIN_S, interval=0.1,
                     what=f"the other worker takes over {name}'s partitions (did {name} leave the group?)")
    taken_over = loop.time()

    log = run.log_path(name)
    readies = _readies(log)
    run.start(name, "worker")
    # Ready again, as a rolling restart waits for: back in the group, its tables recovered and its
    # partitions resumed (Faust logs it once per start; the log file is shared by both lives).
    await eventually(_ready_after(log, readies), timeout=120, what=f"{name} ready after its restart", log=log,
                     alive=run.processes[name])
    return {"exit_s": round(exited - signalled, 2), "takeover_s": round(taken_over - exited, 2)}


async def _publish_until(run: LocalPipeline, documents: list[bytes], published: list[bytes],
                         stop: asyncio.Event) -> None:
    """`PER_S` DLRs a second until `stop`; `published` is exactly what JetStream acknowledged
    (each slice is acknowledged before the next starts and before `stop` is looked at)."""
    slice_size = PER_S // 10
    began = asyncio.get_running_loop().time()
    for start in range(0, len(documents), slice_size):
        if stop.is_set():
            return
        chunk = documents[start:start + slice_size]
        await run.publish(chunk, msg_ids=[json.loads(d)["dlr_id"] for d in chunk])
        published += chunk
        ahead = len(published) / PER_S - (asyncio.get_running_loop().time() - began)
        if ahead > 0:
            await asyncio.sleep(ahead)  # pacing the publisher, not waiting for a condition
    raise AssertionError("ran out of prepared traffic before the restarts ended")


async def _sigterm_and_wait(run: LocalPipeline, name: str) -> None:
    process = run.processes[name]
    os.killpg(process.pid, signal.SIGTERM)
    await eventually(_exited(process), timeout=EXIT_WITHIN_S, what=f"{name} exits after SIGTERM", interval=0.05)
    assert process.returncode == 0, f"{name} exited {process.returncode}\n{tail(run.log_path(name))}"


async def _members(run: LocalPipeline) -> list[str]:
    """The member ids the broker lists in the pipeline's consumer group now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=run.env["CDR_KAFKA_BOOTSTRAP"])
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([run.env["CDR_APP_ID"]])
    finally:
        await admin.close()
    [group] = response.groups
    return sorted(member[0] for member in group[5])


def _exited(process):
    async def probe() -> bool:
        return process.poll() is not None
    return probe


async def _heads(run: LocalPipeline) -> dict[str, int]:
    rows = await query_rows(run, "SELECT operator_id, max(chain_seq) AS head FROM cdr "
                                 "WHERE operator_id = ANY($1::text[]) GROUP BY operator_id", list(run.operators))
    return {r["operator_id"]: r["head"] for r in rows}


def _all_advanced(run: LocalPipeline, before: dict[str, int]):
    async def probe() -> bool:
        now = await _heads(run)
        return all(now.get(op, 0) > before.get(op, 0) for op in run.operators)
    return probe


READY_LINE = '"message": "[^Worker]: Ready"'


def _readies(log) -> int:
    return log.read_text(errors="replace").count(READY_LINE)


def _ready_after(log, count: int):
    async def probe() -> bool:
        return _readies(log) > count
    return probe
