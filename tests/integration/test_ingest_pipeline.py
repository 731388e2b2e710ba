"""NATS → bridge → Kafka → ingest → store → PostgreSQL on the real stack, with bad input,
redeliveries, a database outage and a killed bridge."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
from collections import Counter

import aiohttp
import pytest

from cdr_mediation.codecs.records import DeadLetterRecord
from cdr_mediation.domain.synthetic import synthetic_dlrs
from cdr_mediation.stack.pipeline import LocalPipeline
from cdr_mediation.stack.process import free_port
from tests.integration.support.observe import (
    assert_chains_exact,
    expected_cdr_ids,
    read_topic,
    stored_cdr_ids,
    wait_stored,
)
from tests.integration.support.traffic import publish_steadily

START = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)


def _traffic(pipeline: LocalPipeline, count: int, seed: int) -> list[dict]:
    return list(synthetic_dlrs(seed=seed, start=START, count=count, operators=pipeline.operators,
                               id_prefix=f"{pipeline.namespace}-{seed}"))


def _malformed(pipeline: LocalPipeline, rng: random.Random, template: dict, n: int) -> tuple[bytes, str, str]:
    """One bad publication: (bytes, subject, the dead-letter reason it must get)."""
    op = rng.choice(pipeline.operators)
    subject = pipeline.inbox.subject(op)
    doc = {**template, "dlr_id": f"{pipeline.namespace}-bad-{n}", "operator_id": op}
    kind = n % 6
    if kind == 0:
        return b"\xff\xfe not utf-8 \x00", subject, "invalid_encoding"
    if kind == 1:
        return b'{"dlr_id": "unterminated', subject, "invalid_json"
    if kind == 2:
        del doc["msisdn"]
        return json.dumps(doc).encode(), subject, "missing_field"
    if kind == 3:
        return json.dumps({**doc, "msisdn": "0044-7700-900"}).encode(), subject, "invalid_msisdn"
    if kind == 4:
        other = next(o for o in pipeline.operators if o != op)
        return json.dumps(doc).encode(), pipeline.inbox.subject(other), "subject_operator_mismatch"
    # Valid, but for an operator with no price: rejected by the ingest agent, not the bridge.
    unpriced = f"{pipeline.namespace}-unpriced"
    return json.dumps({**doc, "operator_id": unpriced}).encode(), pipeline.inbox.subject(unpriced), "no_price_for_operator"


async def test_ten_thousand_dlrs_with_duplicates_and_malformed_become_exactly_the_expected_cdrs(pipeline):
    run = pipeline()
    rng = random.Random(20261122)
    print(f"seed 20261122 namespace {run.namespace}")
    traffic = _traffic(run, 10_000, seed=1)
    publications: list[tuple[bytes, str, str | None]] = []  # (bytes, subject, Nats-Msg-Id)
    bad: list[tuple[bytes, str]] = []
    for n, doc in enumerate(traffic):
        publications.append((json.dumps(doc).encode(), run.inbox.subject(doc["operator_id"]), doc["dlr_id"]))
        if rng.random() < 0.01:
            raw, subject, reason = _malformed(run, rng, doc, len(bad))
            publications.append((raw, subject, None))
            bad.append((raw, reason))
    # 5 % redelivered later, outside JetStream's duplicate window (so no Nats-Msg-Id to catch it):
    # only the ingest agent's dedup stands between them and a second CDR.
    for doc in rng.sample(traffic, 500):
        publications.append((json.dumps(doc).encode(), run.inbox.subject(doc["operator_id"]), None))
    assert len(bad) >= 60

    run.start("bridge", "bridge")
    run.start("worker", "worker")
    await run.publish([p[0] for p in publications], subjects=[p[1] for p in publications],
                      msg_ids=[p[2] for p in publications])

    bad_bytes = {raw for raw, _ in bad}
    expected = expected_cdr_ids(run, [p[0] for p in publications if p[0] not in bad_bytes])
    assert len(expected) == 10_000
    await wait_stored(run, len(expected), timeout=240)
    stored = await stored_cdr_ids(run)
    assert Counter(stored).most_common(1)[0][1] == 1, "a CDR was stored twice"
    assert set(stored) == expected

    dead = [DeadLetterRecord.from_kafka(r.key, r.value, r.headers)
            for r in await read_topic(run.env["CDR_KAFKA_BOOTSTRAP"], run.topic("dlr.dlq.v1"))]
    assert Counter((d.original, d.reason) for d in dead) == Counter(bad), "each malformed DLR once, with its reason"
    assert all(d.detail and d.stage in ("bridge", "ingest") and d.source for d in dead)
    await assert_chains_exact(run)


async def _worker_ready(port: int) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/readyz", timeout=aiohttp.ClientTimeout(total=5)) as r:
            return r.status, await r.json(content_type=None)


@pytest.mark.slow
async def test_postgres_down_for_20s_mid_stream_loses_nothing(pipeline, stack):
    run = pipeline()
    web_port = str(free_port())
    run.start("bridge", "bridge")
    run.start("worker", "worker", CDR_WORKER_WEB_PORT=web_port)
    first, second = _traffic(run, 3000, seed=1), _traffic(run, 3000, seed=2)
    await run.publish([json.dumps(d).encode() for d in first], msg_ids=[d["dlr_id"] for d in first])
    await wait_stored(run, 3000, timeout=180)

    postgres = stack.components["postgres"]
    postgres.stop()
    try:
        outage_began = asyncio.get_running_loop().time()
        await run.publish([json.dumps(d).encode() for d in second], msg_ids=[d["dlr_id"] for d in second])
        # The worker notices on its next batch and says so on /readyz.
        for _ in range(200):
            status, body = await _worker_ready(int(web_port))
            if status == 503:
                break
            await asyncio.sleep(0.1)
        assert status == 503 and "postgres" in body["detail"]
        # Hold the outage for the full 20 s the scenario asks for.
        await asyncio.sleep(max(0.0, 20 - (asyncio.get_running_loop().time() - outage_began)))
        assert run.processes["worker"].poll() is None, "the worker must ride out the outage"
    finally:
        await asyncio.to_thread(postgres.start)  # the stack API is synchronous (asyncio.run inside)
    await wait_stored(run, 6000, timeout=180)
    assert set(await stored_cdr_ids(run)) == expected_cdr_ids(run, [json.dumps(d).encode() for d in first + second])
    status, _ = await _worker_ready(int(web_port))
    assert status == 200
    await assert_chains_exact(run)


@pytest.mark.slow
async def test_bridge_killed_mid_stream_loses_nothing_and_doubles_nothing(pipeline):
    run = pipeline(extra_env={"CDR_BRIDGE_ACK_WAIT_S": "2"})
    run.start("bridge", "bridge")
    run.start("worker", "worker")
    traffic = _traffic(run, 8000, seed=3)
    documents = [json.dumps(d).encode() for d in traffic]
    publisher = asyncio.create_task(publish_steadily(run, documents, [d["dlr_id"] for d in traffic], per_s=2000))
    await wait_stored(run, 1000, timeout=180, what="before the kill")
    run.expect_exits = True
    run.kill("bridge")  # SIGKILL: whatever it fetched and did not ack is redelivered after 2 s
    await asyncio.sleep(1)  # the scenario: the bridge is down for a moment while DLRs keep arriving
    run.expect_exits = False
    run.start("bridge", "bridge")
    await publisher
    await wait_stored(run, 8000, timeout=240)
    stored = await stored_cdr_ids(run)
    assert len(stored) == len(set(stored)) == 8000
    assert set(stored) == expected_cdr_ids(run, documents)
    await assert_chains_exact(run)

