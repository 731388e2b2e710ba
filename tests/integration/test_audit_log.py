"""The audit log and the transactional outbox on the real stack (PostgreSQL, Kafka): one chain
under concurrent writers, nothing editable, all-or-nothing with the business write, the relay's
order and delivery, and the first writers (export transitions, `cdrmed verify`)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from cdr_mediation.agents.outbox_relay import relay_batch
from cdr_mediation.domain.audit import AuditDraft, AuditHead, append
from cdr_mediation.domain.day_close import DayClosed
from cdr_mediation.domain.export_lifecycle import ExportEvent as E
from cdr_mediation.infra.postgres.audit_store import (
    AuditOutsideTransaction,
    append_audit,
    read_audit,
    verify_stored_audit,
)
from cdr_mediation.infra.postgres.cdr_store import append_entries
from cdr_mediation.infra.postgres.export_store import (
    ConcurrentTransition,
    ensure_export,
    record_transition,
)
from cdr_mediation.infra.postgres.outbox import (
    OUTBOX_ID_HEADER,
    RELAY_LOCK_KEY,
    OutboxOutsideTransaction,
    enqueue,
    pending,
    try_lead,
)

from .support.chains import simple_chain
from .support.processes import eventually, spawn, stop, tail

CDRMED = [sys.executable, "-m", "cdr_mediation.cli"]
DAY = "2026-11-03"


def run_cdrmed(env: dict, repo_root, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CDRMED, *args], env=env, cwd=repo_root, capture_output=True, text=True, timeout=180)


async def head_seq(conn) -> int:
    return await conn.fetchval("SELECT coalesce(max(audit_seq), 0) FROM audit_log")


async def audit_rows_after(conn, after: int, **filters) -> list:
    entries, cursor = await read_audit(conn, after_seq=after, limit=10_000, **filters)
    assert cursor is None
    return entries


async def append_in_transaction(conn, n: int, actor: str, *, action: str = "test.append") -> int:
    async with conn.transaction():
        entry = await append_audit(conn, actor=actor, actor_role="system", action=action,
                                   request_id=f"{actor}-{n}", refs={"n": n}, detail={})
    return entry.audit_seq


def _closed(operator_id: str | None = None) -> DayClosed:
    operator_id = operator_id or f"aud-{uuid.uuid4().hex[:10]}"
    return DayClosed(operator_id, DAY, "event", 812, "ab" * 32, "2026-11-04T02:00:00.417Z", 5)


def _name(closed: DayClosed) -> str:
    return f"CD{closed.operator_id[-5:].upper()}ATRAA{closed.day_sequence:05d}"


# --- one chain ------------------------------------------------------------------------------

async def test_appends_from_many_concurrent_connections_stay_one_unbroken_chain(stack_env, conn):
    before = await head_seq(conn)
    writers = [await asyncpg.connect(stack_env["CDR_PG_DSN"]) for _ in range(8)]
    tag = uuid.uuid4().hex[:8]
    try:
        async def write(index: int, writer) -> list[int]:
            return [await append_in_transaction(writer, n, f"writer-{tag}-{index}") for n in range(12)]

        seqs = await asyncio.gather(*[write(i, w) for i, w in enumerate(writers)])
    finally:
        for writer in writers:
            await writer.close()
    mine = sorted(seq for per_writer in seqs for seq in per_writer)
    assert len(set(mine)) == 96 and all(s > before for s in mine)
    for per_writer in seqs:  # each writer's appends in its own order
        assert per_writer == sorted(per_writer)
    result = await verify_stored_audit(conn)
    assert result.ok, result.to_dict()
    assert result.head.audit_seq >= mine[-1]
    stored = [e for e in await audit_rows_after(conn, before) if e.actor.startswith(f"writer-{tag}-")]
    assert [e.audit_seq for e in stored] == mine
    assert len({e.request_id for e in stored}) == 96


async def test_an_append_waits_for_the_open_transaction_holding_the_head_and_continues_it(stack_env, conn):
    holder = await asyncpg.connect(stack_env["CDR_PG_DSN"])
    waiter = await asyncpg.connect(stack_env["CDR_PG_DSN"])
    try:
        holding = holder.transaction()
        await holding.start()
        first = await append_audit(holder, actor="holder", actor_role="system", action="test.hold",
                                   request_id="hold-1", refs={}, detail={})
        second_task = asyncio.create_task(append_in_transaction(waiter, 1, "waiter"))
        waiter_pid = waiter.get_server_pid()
        await eventually(lambda: conn.fetchval(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", waiter_pid),
            timeout=20, what="the second append to wait for the audit lock")
        assert not second_task.done()
        await holding.commit()
        assert await second_task == first.audit_seq + 1
    finally:
        await holder.close()
        await waiter.close()


async def test_the_database_refuses_an_entry_that_does_not_continue_the_head(conn):
    async def insert(entry) -> None:
        await conn.execute(
            "INSERT INTO audit_log (audit_seq, at, actor, actor_role, action, request_id, refs, detail, prev_hash, "
            "entry_hash) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9, $10)",
            entry.audit_seq, entry.at, entry.actor, entry.actor_role, entry.action, entry.request_id,
            json.dumps(entry.refs), json.dumps(entry.detail), entry.prev_hash, entry.entry_hash)

    draft = AuditDraft("sql", "system", "test.forge", "forge-1", {}, {})
    async with conn.transaction():
        row = await conn.fetchrow("SELECT audit_seq, entry_hash FROM audit_log ORDER BY audit_seq DESC LIMIT 1")
        head = AuditHead(row["audit_seq"], row["entry_hash"]) if row else AuditHead.genesis()
        now = await conn.fetchval("""SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC',
                                                    'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')""")
    forgeries = [
        ("does not continue the log", append(AuditHead(head.audit_seq + 1, head.entry_hash), draft, now)),
        ("is not the head's entry_hash", append(AuditHead(head.audit_seq, "f" * 64), draft, now)),
        # Read in an earlier transaction: a time this transaction's database did not give.
        ("is not the database time", append(head, draft, now)),
        ("is not the database time", append(head, draft, "2030-01-01T00:00:00.000000Z")),
    ]
    for message, entry in forgeries:
        with pytest.raises(asyncpg.RaiseError, match=message):
            async with conn.transaction():
                await insert(entry)
    assert await head_seq(conn) == head.audit_seq


async def test_append_audit_belongs_to_a_read_committed_transaction(conn):
    with pytest.raises(AuditOutsideTransaction, match="inside the transaction"):
        await append_audit(conn, actor="a", actor_role="system", action="test.x", request_id="r", refs={}, detail={})
    with pytest.raises(AuditOutsideTransaction, match="READ COMMITTED"):
        async with conn.transaction(isolation="repeatable_read"):
            await append_audit(conn, actor="a", actor_role="system", action="test.x", request_id="r", refs={},
                               detail={})
    with pytest.raises(OutboxOutsideTransaction):
        await enqueue(conn, "t", None, b"v")


# --- append-only ----------------------------------------------------------------------------

async def test_the_app_role_may_only_read_and_append_and_the_owner_is_refused_too(conn, owner_conn):
    async with conn.transaction():
        entry = await append_audit(conn, actor="tester", actor_role="system", action="test.immutable",
                                   request_id=uuid.uuid4().hex, refs={}, detail={})
        outbox_id = await enqueue(conn, "audit-test-immutable", b"k", b"v")
    privileges = {p: await conn.fetchval("SELECT has_table_privilege('audit_log', $1)", p)
                  for p in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")}
    assert privileges == {"SELECT": True, "INSERT": True, "UPDATE": False, "DELETE": False, "TRUNCATE": False}
    for statement in ("UPDATE audit_log SET actor = 'x' WHERE audit_seq = $1",
                      "DELETE FROM audit_log WHERE audit_seq = $1",
                      "UPDATE outbox SET value = 'x' WHERE id = $1",
                      "DELETE FROM outbox WHERE id = $1"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement, entry.audit_seq if "audit_log" in statement else outbox_id)
    for table in ("audit_log", "outbox"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(f"TRUNCATE {table}")

    for statement, argument in (("UPDATE audit_log SET actor = 'x' WHERE audit_seq = $1", entry.audit_seq),
                                ("DELETE FROM audit_log WHERE audit_seq = $1", entry.audit_seq),
                                ("DELETE FROM outbox WHERE id = $1", outbox_id),
                                ("UPDATE outbox SET value = 'x', published_at = now() WHERE id = $1", outbox_id)):
        with pytest.raises(asyncpg.RaiseError, match="append-only|only its publication"):
            await owner_conn.execute(statement, argument)
    for table in ("audit_log", "outbox"):
        with pytest.raises(asyncpg.RaiseError, match="append-only: TRUNCATE refused"):
            await owner_conn.execute(f"TRUNCATE {table}")

    # Publication is the one change, once; the relay's role may make it, nothing else.
    assert await conn.execute("UPDATE outbox SET published_at = now() WHERE id = $1", outbox_id) == "UPDATE 1"
    with pytest.raises(asyncpg.RaiseError, match="only its publication may be recorded, once"):
        await conn.execute("UPDATE outbox SET published_at = now() WHERE id = $1", outbox_id)
    stored = await read_audit(conn, after_seq=entry.audit_seq - 1, limit=1)
    assert stored[0][0] == entry


# --- all or nothing -------------------------------------------------------------------------

async def test_a_rolled_back_transaction_leaves_no_business_audit_or_outbox_row(conn):
    closed = _closed()
    topic = f"audit-test-rollback-{uuid.uuid4().hex[:8]}"

    class Abandon(Exception):
        pass

    with pytest.raises(Abandon):
        async with conn.transaction():
            await ensure_export(conn, closed, _name(closed))
            await record_transition(conn, closed.operator_id, DAY, E.BUILT, actor="admin-1", actor_role="admin")
            await enqueue(conn, topic, closed.operator_id.encode(), b"built")
            raise Abandon()
    assert await conn.fetchval("SELECT count(*) FROM export_file WHERE operator_id = $1", closed.operator_id) == 0
    assert await conn.fetchval("SELECT count(*) FROM export_transition WHERE operator_id = $1", closed.operator_id) == 0
    assert (await read_audit(conn, refs={"operator_id": closed.operator_id}))[0] == []
    assert await conn.fetchval("SELECT count(*) FROM outbox WHERE topic = $1", topic) == 0

    # The same write committed leaves all three, and the log goes on unbroken after the rollback.
    async with conn.transaction():
        await ensure_export(conn, closed, _name(closed))
        await record_transition(conn, closed.operator_id, DAY, E.BUILT, actor="admin-1", actor_role="admin")
        await enqueue(conn, topic, closed.operator_id.encode(), b"built")
    assert await conn.fetchval("SELECT count(*) FROM export_transition WHERE operator_id = $1", closed.operator_id) == 1
    assert len((await read_audit(conn, refs={"operator_id": closed.operator_id}))[0]) == 1
    assert await conn.fetchval("SELECT count(*) FROM outbox WHERE topic = $1", topic) == 1
    assert (await verify_stored_audit(conn)).ok


async def test_the_loser_of_a_transition_race_leaves_no_audit_row(stack_env, conn):
    closed = _closed()
    await ensure_export(conn, closed, _name(closed))
    racers = [await asyncpg.connect(stack_env["CDR_PG_DSN"]) for _ in range(2)]
    try:
        results = await asyncio.gather(
            *[record_transition(c, closed.operator_id, DAY, E.BUILT, actor=f"exporter-{n}")
              for n, c in enumerate(racers)], return_exceptions=True)
    finally:
        for racer in racers:
            await racer.close()
    assert sorted(type(r).__name__ for r in results) == ["ConcurrentTransition", "ExportState"]
    winner = next(f"exporter-{n}" for n, r in enumerate(results) if not isinstance(r, ConcurrentTransition))
    entries, _ = await read_audit(conn, refs={"operator_id": closed.operator_id})
    assert [(e.actor, e.detail["step"]) for e in entries] == [(winner, 1)]


# --- the first writers ----------------------------------------------------------------------

async def test_every_export_transition_writes_its_audit_row_referencing_the_step(conn):
    closed = _closed()
    await ensure_export(conn, closed, _name(closed))
    before = await head_seq(conn)
    cms = "MII" + "A" * 4000
    await record_transition(conn, closed.operator_id, DAY, E.BUILT, actor="exporter-1",
                            detail={"zip_sha256": "aa" * 32}, request_id="req-built")
    await record_transition(conn, closed.operator_id, DAY, E.SIGNED, actor="exporter-1",
                            detail={"cms_base64": cms})
    await record_transition(conn, closed.operator_id, DAY, E.DELIVERED, actor="exporter-2")
    entries = await audit_rows_after(conn, before, refs={"operator_id": closed.operator_id})
    assert [e.action for e in entries] == ["export.transition"] * 3
    assert [(e.actor, e.actor_role) for e in entries] == [("exporter-1", "system")] * 2 + [("exporter-2", "system")]
    assert all(e.refs == {"operator_id": closed.operator_id, "day": DAY, "file_name": _name(closed)} for e in entries)
    assert [e.detail for e in entries] == [
        {"from_state": "PENDING", "event": "built", "to_state": "BUILT", "step": 1},
        {"from_state": "BUILT", "event": "signed", "to_state": "SIGNED", "step": 2},
        {"from_state": "SIGNED", "event": "delivered", "to_state": "DELIVERED", "step": 3},
    ]
    assert entries[0].request_id == "req-built" and len({e.request_id for e in entries}) == 3
    assert cms not in json.dumps([e.to_row() for e in entries])  # evidence is referenced, not copied


async def test_cdrmed_verify_records_its_result_in_the_audit_log(conn, stack_env, repo_root):
    operator_id = f"aud-verify-{uuid.uuid4().hex[:8]}"
    pairs = simple_chain(operator_id, 7)
    await append_entries(conn, pairs)
    before = await head_seq(conn)
    result = run_cdrmed(stack_env, repo_root, "verify", "--operator", operator_id)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[0])["ok"] is True
    [entry] = await audit_rows_after(conn, before, action="chain.verify", refs={"operator_ids": [operator_id]})
    assert (entry.actor, entry.actor_role) == ("verifier", "system")
    assert entry.detail["ok"] is True
    assert entry.detail["results"] == [{"operator_id": operator_id, "ok": True, "verified": 7,
                                        "head": {"chain_seq": 7, "head_hash": pairs[-1][1]}}]
    assert entry.request_id in result.stderr  # the run's log line names the audit row's request


async def test_cdrmed_audit_verify_passes_on_the_live_log_and_records_itself(conn, stack_env, repo_root):
    before = await head_seq(conn)
    head = (await verify_stored_audit(conn)).head
    result = run_cdrmed(stack_env, repo_root, "audit", "verify", "--expect-head", f"{head.audit_seq}:{head.entry_hash}")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["head"]["audit_seq"] >= head.audit_seq
    [entry] = await audit_rows_after(conn, before, action="audit.verify")
    assert entry.detail == report


async def test_a_superuser_edit_behind_the_triggers_is_found_by_cdrmed_audit_verify(stack, stack_env, repo_root):
    """In a database of its own: the shared log of this session must stay intact."""
    postgres = stack.components["postgres"]
    database = f"audit_{uuid.uuid4().hex[:8]}"
    dsn = await postgres.fresh_database(database)
    try:
        app = await asyncpg.connect(dsn)
        try:
            for n in range(4):
                await append_in_transaction(app, n, "tamper-test")
        finally:
            await app.close()
        env = {**stack_env, "CDR_PG_DSN": dsn}
        assert run_cdrmed(env, repo_root, "audit", "verify").returncode == 0
        superuser = await postgres._superuser(database)
        try:
            await superuser.execute("SET session_replication_role = replica")  # triggers off
            await superuser.execute("UPDATE audit_log SET detail = '{\"n\": 1}' WHERE audit_seq = 2")
        finally:
            await superuser.close()
        result = run_cdrmed(env, repo_root, "audit", "verify")
        assert result.returncode == 1
        report = json.loads(result.stdout)
        assert (report["first_break"]["kind"], report["first_break"]["seq"], report["verified"]) == (
            "hash_mismatch", 2, 1)
    finally:
        admin = await postgres._superuser("postgres")
        try:
            await admin.execute(f"DROP DATABASE {database} WITH (FORCE)")
        finally:
            await admin.close()


# --- the outbox relay -----------------------------------------------------------------------

async def create_topic(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)], timeout_ms=15000)
    finally:
        await admin.close()


async def read_topic(bootstrap: str, topic: str, *, at_least: int, timeout_s: float = 30) -> tuple[list, int]:
    """Every record of the topic's one partition once `at_least` arrived, and its high watermark."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    partition = TopicPartition(topic, 0)
    try:
        consumer.assign([partition])
        consumer.seek(partition, 0)
        records: list = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(records) < at_least and loop.time() < deadline:
            batch = await consumer.getmany(partition, timeout_ms=500)
            records.extend(batch.get(partition, []))
        return records, consumer.highwater(partition)
    finally:
        await consumer.stop()


def outbox_id(record) -> int:
    return int(dict(record.headers)[OUTBOX_ID_HEADER])


async def test_the_relay_publishes_exactly_the_committed_rows_in_commit_order(stack_env, repo_root, conn):
    bootstrap = stack_env["CDR_KAFKA_BOOTSTRAP"]
    topic = f"audit-test-outbox-{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, topic)
    writers = [await asyncpg.connect(stack_env["CDR_PG_DSN"]) for _ in range(4)]

    async def write(index: int, writer) -> list[tuple[int, bytes]]:
        committed = []
        for n in range(15):
            value = f"w{index}-{n}".encode()
            try:
                async with writer.transaction():
                    row_id = await enqueue(writer, topic, f"k{index}".encode(), value, {"origin": f"writer-{index}"})
                    if n % 4 == 3:
                        raise LookupError("abandoned")  # rolled back: must never reach Kafka
                committed.append((row_id, value))
            except LookupError:
                pass
        return committed

    try:
        per_writer = await asyncio.gather(*[write(i, w) for i, w in enumerate(writers)])
    finally:
        for writer in writers:
            await writer.close()
    committed = sorted(pair for pairs in per_writer for pair in pairs)
    assert len(committed) == 4 * 12  # 3 of each 15 rolled back

    once = run_cdrmed(stack_env, repo_root, "outbox", "relay", "--once")
    assert once.returncode == 0, once.stderr
    assert json.loads(once.stdout)["published"] >= len(committed)
    records, highwater = await read_topic(bootstrap, topic, at_least=len(committed))
    assert [(outbox_id(r), r.value) for r in records] == committed  # in id = commit order, nothing else
    assert highwater == len(committed)
    assert all(dict(r.headers)["origin"] == f"writer-{r.key.decode()[1:]}".encode() for r in records)
    published = await conn.fetchval("SELECT count(*) FROM outbox WHERE topic = $1 AND published_at IS NOT NULL", topic)
    assert published == len(committed)

    again = run_cdrmed(stack_env, repo_root, "outbox", "relay", "--once")
    assert again.returncode == 0, again.stderr
    assert (await read_topic(bootstrap, topic, at_least=len(committed)))[1] == len(committed)


async def test_a_row_published_but_not_marked_is_published_again_with_its_outbox_id(stack_env, conn):
    """At least once: a relay that died after Kafka's acknowledgement and before the mark."""
    bootstrap = stack_env["CDR_KAFKA_BOOTSTRAP"]
    topic = f"audit-test-again-{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, topic)
    async with conn.transaction():
        first = await enqueue(conn, topic, b"k", b"one")
        second = await enqueue(conn, topic, b"k", b"two")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        assert await try_lead(conn)
        for message in [m for m in await pending(conn, limit=10_000) if m.topic == topic]:
            await producer.send_and_wait(message.topic, message.value, key=message.key,
                                         headers=message.kafka_headers())
        # ... the relay dies here; the next one finds the rows unmarked and sends them again.
        while await relay_batch(conn, producer, limit=500):
            pass
    finally:
        await producer.stop()
        await conn.execute("SELECT pg_advisory_unlock($1)", RELAY_LOCK_KEY)
    records, _ = await read_topic(bootstrap, topic, at_least=4)
    assert [(outbox_id(r), r.value) for r in records] == [(first, b"one"), (second, b"two")] * 2
    assert {outbox_id(r) for r in records} == {first, second}  # what a consumer deduplicates by


async def relay_leads(conn) -> bool:
    return await conn.fetchval(
        "SELECT count(*) = 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
        "AND classid::bigint = $1 AND objid::bigint = $2", RELAY_LOCK_KEY >> 32, RELAY_LOCK_KEY & 0xFFFFFFFF)


async def test_a_running_relay_publishes_a_commit_when_notified_and_a_second_one_stands_by(
        stack_env, repo_root, conn, tmp_path):
    bootstrap = stack_env["CDR_KAFKA_BOOTSTRAP"]
    topic = f"audit-test-live-{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, topic)
    log = tmp_path / "relay.log"
    # Polling is an hour apart: only the NOTIFY sent at commit can make it publish in time.
    relay = spawn(["-m", "cdr_mediation.cli", "outbox", "relay"],
                  env={**stack_env, "CDR_OUTBOX_POLL_INTERVAL_S": "3600"}, log_path=log)
    try:
        await eventually(lambda: relay_leads(conn), timeout=30, what="the relay to lead", log=log, alive=relay)
        standby = run_cdrmed(stack_env, repo_root, "outbox", "relay", "--once")
        assert standby.returncode == 1 and "another outbox relay is active" in standby.stderr
        async with conn.transaction():
            row_id = await enqueue(conn, topic, b"k", b"live")
        records, _ = await read_topic(bootstrap, topic, at_least=1)
        assert [(outbox_id(r), r.value) for r in records] == [(row_id, b"live")], tail(log)
        await eventually(lambda: conn.fetchval("SELECT published_at IS NOT NULL FROM outbox WHERE id = $1", row_id),
                         timeout=20, what="the row to be marked published", log=log, alive=relay)
    finally:
        assert stop(relay) == 0, tail(log)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(line["message"] == "outbox relay leading" for line in lines)
    assert await relay_leads(conn) is False  # its lock went with it
