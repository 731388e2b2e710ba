"""The closed-rollup store against the real PostgreSQL: exact round trip, re-emissions absorbed,
conflicts refused with nothing of their batch stored, append-only, migration on an existing database."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import asyncpg
import pytest

from cdr_mediation.domain.cdr import Cdr, DlrStatus, RecordType, format_utc
from cdr_mediation.domain.chain import ChainHead, link
from cdr_mediation.domain.rollup import (
    CLOSED_BY_CORRECTION,
    ClockTick,
    OperatorRollupState,
    RollupClosed,
    apply_entries,
)
from cdr_mediation.infra.postgres import migrate
from cdr_mediation.infra.postgres.cdr_store import append_entries
from cdr_mediation.infra.postgres.rollup_store import (
    RollupConflict,
    append_closes,
    fetch_closes,
    operators_with_activity,
)

UTC = dt.timezone.utc
GRACE = dt.timedelta(hours=2)
STATUS_CYCLE = (DlrStatus.DELIVERED, DlrStatus.DELIVERED, DlrStatus.UNDELIVERED, DlrStatus.EXPIRED,
                DlrStatus.REJECTED, DlrStatus.UNKNOWN)


def new_operator(prefix: str = "roll") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def chain(operator_id: str, moments: list[dt.datetime], head: ChainHead | None = None,
          void_every: int = 0) -> tuple[list[tuple], ChainHead]:
    """Linked entries of one operator with these done_at moments, continuing `head`.

    Statuses cycle; DELIVERED ones are billable with 1-3 segments. With `void_every`, every n-th
    entry is instead a VOID of the latest original still in force, as the ingest agent makes one
    (docs/adjustments.md): the original's values and done_at, zero amounts, and — like the CDR
    topic carries it — the superseded version as a third item: (entry, record_hash, supersedes)."""
    head = head or ChainHead.genesis(operator_id)
    pairs: list[tuple] = []
    in_force: list[dict] = []
    for moment in moments:
        n = head.chain_seq + 1
        if void_every and n % void_every == 0 and in_force:
            original = in_force.pop()
            unlinked = Cdr.from_entry({**original, "record_type": RecordType.VOID.value,
                                       "cdr_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{operator_id}/{n}")),
                                       "billable": False, "amount_minor": 0, "tax_minor": 0,
                                       "ref_cdr_id": original["cdr_id"], "ticket_ref": f"T-{n}", "actor": "admin",
                                       "chain_seq": 0, "prev_hash": ""})
            linked, record_hash = link(head, unlinked)
            pairs.append((linked.to_entry(), record_hash, original))
            head = head.advance(linked, record_hash)
            continue
        status = STATUS_CYCLE[n % len(STATUS_CYCLE)]
        segments = 1 + n % 3
        billable = status is DlrStatus.DELIVERED
        unlinked = Cdr(
            record_type=RecordType.CDR,
            cdr_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{operator_id}/{n}")),
            dlr_id=f"{operator_id}-dlr-{n}", message_id=f"m-{n}", tenant_id="tenant-a", operator_id=operator_id,
            sender_id="BANKCO", msisdn="+447700900123", status=status, submitted_at=format_utc(moment),
            done_at=format_utc(moment), segments=segments, billable=billable,
            unit_price_minor=7, amount_minor=7 * segments if billable else 0,
            tax_minor=segments if billable else 0, currency="EUR", pricing_version="p1",
            error_code=None if billable else "E1", smsc_id="smsc-1", chain_seq=0, prev_hash="",
        )
        linked, record_hash = link(head, unlinked)
        pairs.append((linked.to_entry(), record_hash))
        in_force.append(pairs[-1][0])
        head = head.advance(linked, record_hash)
    return pairs, head


def spread(start: dt.datetime, hours: float, count: int) -> list[dt.datetime]:
    """`count` moments evenly over `hours` from `start`, on whole milliseconds."""
    step = dt.timedelta(hours=hours) / count
    return [(start + step * n).replace(microsecond=(start + step * n).microsecond // 1000 * 1000)
            for n in range(count)]


def rollup_closes(operator_id: str, items: list, state: OperatorRollupState | None = None):
    step = apply_entries(state or OperatorRollupState.initial(operator_id), items, GRACE)
    return list(step.closed), step.new_state


def tick(operator_id: str, moment: dt.datetime) -> ClockTick:
    return ClockTick(operator_id, format_utc(moment))


def stream_with_corrections(operator_id: str, day: dt.datetime) -> tuple[list[tuple[dict, str]], list[RollupClosed]]:
    """Entries 10:00-14:00 (13:00 empty) closed by events, a late entry for 11:00 (a correction
    revision), a late entry at 07:xx before the first closed hour (a backfill), then a tick that
    closes everything: every kind of close."""
    first, head = chain(operator_id, spread(day.replace(hour=10), 3, 30) + spread(day.replace(hour=14), 3, 12),
                        void_every=7)
    late, head = chain(operator_id, [day.replace(hour=11, minute=30, second=1),
                                     day.replace(hour=7, minute=15, microsecond=5000)], head)
    closes, state = rollup_closes(operator_id, list(first))
    more, state = rollup_closes(operator_id, list(late) + [tick(operator_id, day.replace(hour=23))], state)
    return first + late, closes + more


DAY = dt.datetime(2026, 11, 3, tzinfo=UTC)


def _sorted(closes: list[RollupClosed]) -> list[RollupClosed]:
    return sorted(closes, key=lambda c: (c.operator_id, c.hour_start, c.revision))


async def test_the_migration_is_recorded_and_the_app_role_may_only_select_and_insert(conn):
    rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
    by_version = {r["version"]: r for r in rows}
    assert by_version[2]["name"] == "rollup_closed"
    assert by_version[2]["checksum"].strip() == migrate.load_migrations()[1].checksum
    assert await conn.fetchval("SELECT tableowner FROM pg_tables WHERE tablename = 'rollup_closed'") == "cdr_owner"
    privileges = {p: await conn.fetchval("SELECT has_table_privilege('rollup_closed', $1)", p)
                  for p in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")}
    assert privileges == {"SELECT": True, "INSERT": True, "UPDATE": False, "DELETE": False, "TRUNCATE": False}


async def test_closes_of_every_kind_round_trip_exactly(conn):
    operator_id = new_operator()
    _, closes = stream_with_corrections(operator_id, DAY)
    kinds = {(c.closed_by, c.revision > 0, c.rollup.is_empty) for c in closes}
    assert ("event", False, True) in kinds and ("tick", False, False) in kinds  # an empty hour; a tick close
    assert ("correction", True, False) in kinds and ("correction", False, False) in kinds  # delta; backfill
    assert await append_closes(conn, closes) == len(closes)

    stored = await fetch_closes(conn, operator_id=operator_id, start=DAY, end=DAY + dt.timedelta(days=1))
    assert stored == _sorted(closes)
    assert [c.to_dict() for c in stored] == [c.to_dict() for c in _sorted(closes)]
    assert all(type(c.rollup.currency) is str and type(c.watermark) is str for c in stored)


async def test_a_close_emitted_again_is_absorbed(conn):
    operator_id = new_operator()
    _, closes = stream_with_corrections(operator_id, DAY)
    assert await append_closes(conn, closes[:5]) == 5
    assert await append_closes(conn, closes[:5]) == 0  # the same emission after a crash
    assert await append_closes(conn, closes[3:] + closes[3:4]) == len(closes) - 5  # overlap + repeat in batch
    assert await append_closes(conn, []) == 0
    stored = await fetch_closes(conn, operator_id=operator_id, start=DAY, end=DAY + dt.timedelta(days=1))
    assert stored == _sorted(closes)


async def test_an_append_inside_the_callers_transaction_survives_a_re_emission(conn):
    operator_id = new_operator()
    _, closes = stream_with_corrections(operator_id, DAY)
    async with conn.transaction():
        assert await append_closes(conn, closes[:4]) == 4
        assert await append_closes(conn, closes[2:6]) == 2  # fast path meets stored keys: savepoint, merge
        assert await conn.fetchval("SELECT count(*) FROM rollup_closed WHERE operator_id = $1", operator_id) == 6


async def test_a_different_close_under_a_stored_key_is_refused_and_nothing_of_its_batch_is_stored(conn):
    operator_id = new_operator()
    _, closes = stream_with_corrections(operator_id, DAY)
    assert await append_closes(conn, closes[:3]) == 3
    altered_rollup = dataclasses.replace(closes[1].rollup, amount_minor=closes[1].rollup.amount_minor + 1)
    altered = dataclasses.replace(closes[1], rollup=altered_rollup)
    with pytest.raises(RollupConflict, match=f"{operator_id}.*{closes[1].hour_start} revision 0: stored with other"):
        await append_closes(conn, closes[3:] + [altered])
    # Another watermark or chain head is a conflict too (the close is the whole record).
    with pytest.raises(RollupConflict):
        await append_closes(conn, [dataclasses.replace(closes[0], watermark=format_utc(DAY.replace(hour=22)))])
    stored = await fetch_closes(conn, operator_id=operator_id, start=DAY, end=DAY + dt.timedelta(days=1))
    assert stored == _sorted(closes[:3]), "the conflicting batch left rows behind"


async def test_two_different_closes_with_one_key_in_one_batch_are_refused(conn):
    operator_id = new_operator()
    _, closes = stream_with_corrections(operator_id, DAY)
    twin = dataclasses.replace(closes[0], chain_head_seq=closes[0].chain_head_seq + 1)
    with pytest.raises(RollupConflict, match="given twice in one batch"):
        await append_closes(conn, closes + [twin])
    assert await fetch_closes(conn, operator_id=operator_id, start=DAY, end=DAY + dt.timedelta(days=1)) == []


async def test_the_table_refuses_values_the_rollup_never_emits_and_stores_nothing_of_the_batch(conn):
    operator_id = new_operator()
    _, closes = stream_with_corrections(operator_id, DAY)
    no_currency = dataclasses.replace(closes[-1], rollup=dataclasses.replace(closes[-1].rollup, currency=None))
    with pytest.raises(asyncpg.NotNullViolationError):
        await append_closes(conn, closes[:-1] + [no_currency])
    revision_by_event = dataclasses.replace(closes[0], revision=3)
    with pytest.raises(asyncpg.CheckViolationError):
        await append_closes(conn, closes[:-1] + [revision_by_event])
    assert await fetch_closes(conn, operator_id=operator_id, start=DAY, end=DAY + dt.timedelta(days=1)) == []


async def test_fetch_is_bounded_to_start_inclusive_end_exclusive_and_by_operator(conn):
    a, b = sorted((new_operator("roll-a"), new_operator("roll-b")))
    day = dt.datetime(2026, 11, 4, tzinfo=UTC)
    closes_a = stream_with_corrections(a, day)[1]
    closes_b = stream_with_corrections(b, day)[1]
    await append_closes(conn, closes_a + closes_b)
    ten, twelve = day.replace(hour=10), day.replace(hour=12)
    window_a = await fetch_closes(conn, operator_id=a, start=ten, end=twelve)
    assert {c.hour_start for c in window_a} == {format_utc(ten), format_utc(day.replace(hour=11))}
    assert window_a == _sorted([c for c in closes_a if ten <= dt.datetime.fromisoformat(c.hour_start) < twelve])
    # Strings in format_utc form are accepted as bounds too; without an operator: every one, in order.
    both = await fetch_closes(conn, start=format_utc(ten), end=format_utc(twelve))
    assert [c for c in both if c.operator_id in (a, b)] == window_a + [
        c for c in _sorted(closes_b) if format_utc(ten) <= c.hour_start < format_utc(twelve)]
    with pytest.raises(ValueError, match="timezone-aware"):
        await fetch_closes(conn, operator_id=a, start=dt.datetime(2026, 11, 4), end=twelve)


async def test_operators_with_activity_are_those_with_cdrs_or_closes_in_the_range(conn):
    day = dt.datetime(2026, 11, 5, tzinfo=UTC)
    cdrs_only, closes_only, elsewhere = new_operator("act-c"), new_operator("act-r"), new_operator("act-x")
    entries, _ = chain(cdrs_only, spread(day.replace(hour=23), 0.5, 5))
    await append_entries(conn, entries)
    await append_closes(conn, stream_with_corrections(closes_only, day)[1])
    other, _ = chain(elsewhere, spread(day + dt.timedelta(days=1), 1, 3))  # the next day, from 00:00:00.000
    await append_entries(conn, other)
    found = await operators_with_activity(conn, day, day + dt.timedelta(days=1))
    assert cdrs_only in found and closes_only in found and elsewhere not in found
    assert found == sorted(found)
    assert elsewhere in await operators_with_activity(conn, day + dt.timedelta(days=1), day + dt.timedelta(days=2))


async def test_append_only_for_the_app_role_and_for_the_owner(conn, stack):
    operator_id = new_operator()
    _, closes = stream_with_corrections(operator_id, DAY)
    await append_closes(conn, closes[:2])
    for statement in ("UPDATE rollup_closed SET amount_minor = amount_minor + 1 WHERE operator_id = $1",
                      "DELETE FROM rollup_closed WHERE operator_id = $1"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement, operator_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute("TRUNCATE rollup_closed")

    owner = await stack.components["postgres"]._superuser("cdr")
    try:
        await owner.execute("SET ROLE cdr_owner")
        for statement in ("UPDATE rollup_closed SET amount_minor = amount_minor + 1 WHERE operator_id = $1",
                          "DELETE FROM rollup_closed WHERE operator_id = $1"):
            with pytest.raises(asyncpg.RaiseError, match="rollup_closed is append-only"):
                await owner.execute(statement, operator_id)
        with pytest.raises(asyncpg.RaiseError, match="append-only: TRUNCATE refused"):
            await owner.execute("TRUNCATE rollup_closed")
    finally:
        await owner.close()
    stored = await fetch_closes(conn, operator_id=operator_id, start=DAY, end=DAY + dt.timedelta(days=1))
    assert stored == _sorted(closes[:2])


async def test_the_migration_applies_on_a_database_that_already_has_the_cdr_table(stack, monkeypatch):
    """An existing database (0001 applied, CDRs stored) gets 0002 on the next migration run."""
    postgres = stack.components["postgres"]
    database = f"mig_{uuid.uuid4().hex[:8]}"
    admin = await postgres._superuser("postgres")
    await admin.execute(f"CREATE DATABASE {database} OWNER cdr_owner")
    try:
        conn = await postgres._superuser(database)
        try:
            await conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC; ALTER SCHEMA public OWNER TO cdr_owner")
            every = migrate.load_migrations()
            assert [m.version for m in every][:2] == [1, 2]
            monkeypatch.setattr(migrate, "load_migrations", lambda: every[:1])
            assert await migrate.apply_migrations(conn, owner_role="cdr_owner", app_role="cdr_app") == [1]
            monkeypatch.setattr(migrate, "load_migrations", lambda: every)
            assert (await migrate.apply_migrations(conn, owner_role="cdr_owner", app_role="cdr_app"))[0] == 2
            assert await migrate.apply_migrations(conn, owner_role="cdr_owner", app_role="cdr_app") == []
            assert await conn.fetchval("SELECT tableowner FROM pg_tables WHERE tablename = 'rollup_closed'") == "cdr_owner"
        finally:
            await conn.close()
    finally:
        await admin.execute(f"DROP DATABASE {database} WITH (FORCE)")
        await admin.close()
