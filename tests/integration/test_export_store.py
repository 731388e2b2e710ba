"""Export files and their lifecycle in the real PostgreSQL: legal paths recorded as an audit trail,
illegal moves and races refused, nothing editable afterwards."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import asyncpg
import pytest

from cdr_mediation.domain.day_close import DayClosed
from cdr_mediation.domain.export_lifecycle import ExportEvent as E
from cdr_mediation.domain.export_lifecycle import ExportState as S
from cdr_mediation.domain.export_lifecycle import IllegalTransition
from cdr_mediation.infra.postgres.export_store import (
    ConcurrentTransition,
    ExportConflict,
    current_state,
    ensure_export,
    history,
    record_transition,
)

DAY = "2026-11-03"


def _closed(sequence: int = 5, day: str = DAY) -> DayClosed:
    return DayClosed(f"exp-{uuid.uuid4().hex[:10]}", day, "event", 812, "ab" * 32, "2026-11-04T02:00:00.417Z", sequence)


def _name(closed: DayClosed) -> str:
    return f"CD{closed.operator_id[-5:].upper()}ATRAA{closed.day_sequence:05d}"


async def test_a_closed_day_is_recorded_once_in_pending(conn):
    closed = _closed()
    assert await ensure_export(conn, closed, _name(closed)) is True
    assert await ensure_export(conn, closed, _name(closed)) is False  # the day.closed record again
    assert await current_state(conn, closed.operator_id, DAY) == (S.PENDING, 0)


async def test_another_file_for_the_same_day_or_sequence_is_refused(conn):
    closed = _closed()
    await ensure_export(conn, closed, _name(closed))
    with pytest.raises(ExportConflict, match="already exported"):
        await ensure_export(conn, closed, _name(closed) + "X")
    other_day = DayClosed(closed.operator_id, "2026-11-04", "tick", 900, "cd" * 32, "2026-11-05T02:00:00.000Z", 5)
    with pytest.raises(ExportConflict):
        await ensure_export(conn, other_day, _name(other_day) + "Y")


async def test_the_lifecycle_is_recorded_step_by_step_with_its_evidence(conn):
    closed = _closed()
    await ensure_export(conn, closed, _name(closed))
    path = [(E.BUILT, {"zip_sha256": "aa" * 32}), (E.SIGNED, {"profile": "ed25519"}), (E.DELIVERED, {"channel": "sftp"}),
            (E.REJECTED, {"rap_errors": [{"code": 10}]}), (E.REBUILT, {"zip_sha256": "bb" * 32}),
            (E.SIGNED, {}), (E.DELIVERED, {"channel": "sftp"}), (E.ACKED, {"ack": "ok"})]
    for event, detail in path:
        await record_transition(conn, closed.operator_id, DAY, event, actor="exporter-1", detail=detail)
    assert await current_state(conn, closed.operator_id, DAY) == (S.ACKED, len(path))
    steps = await history(conn, closed.operator_id, DAY)
    assert [(s.step, s.event, s.to_state) for s in steps][:3] == [(1, E.BUILT, S.BUILT), (2, E.SIGNED, S.SIGNED),
                                                                 (3, E.DELIVERED, S.DELIVERED)]
    assert steps[3].detail == {"rap_errors": [{"code": 10}]} and all(s.actor == "exporter-1" for s in steps)
    assert [s.from_state for s in steps[1:]] == [s.to_state for s in steps[:-1]]  # one unbroken path


async def test_an_illegal_move_is_refused_and_nothing_is_stored(conn):
    closed = _closed()
    await ensure_export(conn, closed, _name(closed))
    with pytest.raises(IllegalTransition):
        await record_transition(conn, closed.operator_id, DAY, E.DELIVERED, actor="exporter-1")
    assert await history(conn, closed.operator_id, DAY) == []


async def test_two_exporters_racing_on_one_file_move_it_once(stack_env):
    closed = _closed()
    connections = [await asyncpg.connect(stack_env["CDR_PG_DSN"]) for _ in range(2)]
    try:
        await ensure_export(connections[0], closed, _name(closed))
        results = await asyncio.gather(
            *[record_transition(c, closed.operator_id, DAY, E.BUILT, actor=f"exporter-{n}") for n, c in enumerate(connections)],
            return_exceptions=True)
        assert sorted(type(r).__name__ for r in results) == ["ConcurrentTransition", "ExportState"]
        assert [s.to_state for s in await history(connections[0], closed.operator_id, DAY)] == [S.BUILT]
    finally:
        for connection in connections:
            await connection.close()


async def test_a_step_that_does_not_start_where_the_last_ended_is_refused_by_the_database(conn):
    closed = _closed()
    await ensure_export(conn, closed, _name(closed))
    with pytest.raises(asyncpg.RaiseError, match="starts in SIGNED but the export is in PENDING"):
        await conn.execute("INSERT INTO export_transition (operator_id, day, step, from_state, event, to_state, actor) "
                           "VALUES ($1, $2, 1, 'SIGNED', 'delivered', 'DELIVERED', 'sql')", closed.operator_id,
                           dt.date.fromisoformat(DAY))


async def test_nothing_can_be_edited_or_removed(conn):
    closed = _closed()
    await ensure_export(conn, closed, _name(closed))
    await record_transition(conn, closed.operator_id, DAY, E.BUILT, actor="exporter-1")
    for statement in ("UPDATE export_transition SET to_state = 'ACKED' WHERE operator_id = $1",
                      "DELETE FROM export_transition WHERE operator_id = $1",
                      "UPDATE export_file SET file_name = 'x' WHERE operator_id = $1",
                      "DELETE FROM export_file WHERE operator_id = $1"):
        with pytest.raises((asyncpg.InsufficientPrivilegeError, asyncpg.RaiseError)):
            await conn.execute(statement, closed.operator_id)
    assert await current_state(conn, closed.operator_id, DAY) == (S.BUILT, 1)


async def test_the_migration_is_recorded_and_the_app_role_may_only_select_and_insert(conn):
    from cdr_mediation.infra.postgres import migrate

    migration = next(m for m in migrate.load_migrations() if m.name == "export_lifecycle")
    stored = await conn.fetchrow("SELECT name, checksum FROM schema_migrations WHERE version = $1", migration.version)
    assert (stored["name"], stored["checksum"].strip()) == ("export_lifecycle", migration.checksum)
    for table in ("export_file", "export_transition"):
        assert await conn.fetchval("SELECT tableowner FROM pg_tables WHERE tablename = $1", table) == "cdr_owner"
        privileges = {p: await conn.fetchval("SELECT has_table_privilege($1, $2)", table, p)
                      for p in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")}
        assert privileges == {"SELECT": True, "INSERT": True, "UPDATE": False, "DELETE": False, "TRUNCATE": False}
