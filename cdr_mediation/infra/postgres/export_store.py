"""Export files and their lifecycle in PostgreSQL (migration 0003; domain/export_lifecycle.py).

`ensure_export` records an export in PENDING when its day closes (idempotent: the same closed day
again is a no-op; another file for the same day or the same sequence number is refused).
`record_transition` asks the domain for the next state and appends it as the next step, and in
the same transaction an `export.transition` row of the audit log (docs/audit.md) that references
the step: the step holds the evidence, the audit row puts it in the system-wide hash chain. Two
exporters racing on one file cannot both move it: the second insert of the same step fails on the
primary key and reports `ConcurrentTransition` (its audit row rolls back with it), and a step
that does not start where the last one ended is refused by the database trigger as well.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any, Mapping

import asyncpg

from cdr_mediation.domain.day_close import DayClosed
from cdr_mediation.domain.file_scope import FileScope, file_scope
from cdr_mediation.domain.audit import EXPORT_TRANSITION, SYSTEM_ROLE
from cdr_mediation.domain.export_lifecycle import ExportEvent, ExportState, next_state
from cdr_mediation.infra.postgres.audit_store import append_audit, new_request_id


class ExportConflict(RuntimeError):
    """A different export already holds this day, sequence number or file name."""


class ConcurrentTransition(RuntimeError):
    """Another process moved this export first; reload its state and decide again."""


@dataclasses.dataclass(frozen=True)
class ExportStep:
    step: int
    from_state: ExportState
    event: ExportEvent
    to_state: ExportState
    detail: Mapping[str, Any]
    actor: str
    at: dt.datetime


async def ensure_export(conn, closed: DayClosed, file_name: str) -> bool:
    """Record the export of a closed day in PENDING; True if it is new."""
    day = dt.date.fromisoformat(closed.day)
    try:
        status = await conn.execute(
            "INSERT INTO export_file (operator_id, day, day_sequence, file_name, day_closed) "
            "VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT (operator_id, day) DO NOTHING",
            closed.operator_id, day, closed.day_sequence, file_name, json.dumps(closed.to_dict(), sort_keys=True))
    except asyncpg.UniqueViolationError as exc:  # same sequence or file name for another day
        raise ExportConflict(f"{file_name}: {exc.detail or exc}") from None
    if status.endswith(" 1"):
        return True
    stored = await conn.fetchrow("SELECT day_sequence, file_name, day_closed FROM export_file "
                                 "WHERE operator_id = $1 AND day = $2", closed.operator_id, day)
    if (stored["day_sequence"], stored["file_name"], json.loads(stored["day_closed"])) != (
            closed.day_sequence, file_name, closed.to_dict()):
        raise ExportConflict(f"{closed.operator_id} {closed.day}: already exported as {stored['file_name']} "
                             f"(sequence {stored['day_sequence']}), not as {file_name}")
    return False


async def current_state(conn, operator_id: str, day: str) -> tuple[ExportState, int]:
    """The export's state and the number of steps taken (0: still PENDING as created)."""
    state, step, _ = await _position(conn, operator_id, day)
    return state, step


async def _position(conn, operator_id: str, day: str) -> tuple[ExportState, int, str]:
    """(state, steps taken, file name) of an export."""
    row = await conn.fetchrow(
        "SELECT f.file_name, t.to_state, t.step FROM export_file f LEFT JOIN LATERAL ("
        "  SELECT to_state, step FROM export_transition t WHERE t.operator_id = f.operator_id AND t.day = f.day"
        "  ORDER BY step DESC LIMIT 1) t ON true WHERE f.operator_id = $1 AND f.day = $2",
        operator_id, dt.date.fromisoformat(day))
    if row is None:
        raise LookupError(f"no export of {operator_id} for {day}")
    if row["step"] is None:
        return ExportState.PENDING, 0, row["file_name"]
    return ExportState(row["to_state"]), row["step"], row["file_name"]


async def record_transition(conn, operator_id: str, day: str, event: ExportEvent, *, actor: str,
                            detail: Mapping[str, Any] | None = None, actor_role: str = SYSTEM_ROLE,
                            request_id: str | None = None) -> ExportState:
    """Move the export by `event` (the domain's table decides; `IllegalTransition` if it may not)
    and append the step with its evidence and its audit row, atomically. Returns the new state.

    Runs in a transaction of its own, or in a savepoint of the caller's: a refused step leaves
    neither its row nor its audit row, and the caller's transaction usable. `actor_role` is
    `system` for the agents, the person's role for a person; `request_id` ties the audit row to
    the request or log line that caused it (a new one if not given)."""
    async with conn.transaction():
        state, step, file_name = await _position(conn, operator_id, day)
        target = next_state(state, event)
        event = ExportEvent(event)
        try:
            await conn.execute(
                "INSERT INTO export_transition (operator_id, day, step, from_state, event, to_state, detail, actor) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)",
                operator_id, dt.date.fromisoformat(day), step + 1, state.value, event.value, target.value,
                json.dumps(dict(detail or {}), sort_keys=True), actor)
        except (asyncpg.UniqueViolationError, asyncpg.RaiseError) as exc:
            raise ConcurrentTransition(f"{operator_id} {day}: step {step + 1} from {state.value} lost a race ({exc})") from None
        # The step's evidence (a CMS, a RAP) stays in export_transition; the audit row names the step.
        await append_audit(conn, actor=actor, actor_role=actor_role, action=EXPORT_TRANSITION,
                           request_id=request_id or new_request_id(),
                           refs={"operator_id": operator_id, "day": dt.date.fromisoformat(day).isoformat(),
                                 "file_name": file_name},
                           detail={"from_state": state.value, "event": event.value, "to_state": target.value,
                                   "step": step + 1})
    return target


async def history(conn, operator_id: str, day: str) -> list[ExportStep]:
    rows = await conn.fetch(
        "SELECT step, from_state, event, to_state, detail, actor, at FROM export_transition "
        "WHERE operator_id = $1 AND day = $2 ORDER BY step", operator_id, dt.date.fromisoformat(day))
    return [ExportStep(r["step"], ExportState(r["from_state"]), ExportEvent(r["event"]), ExportState(r["to_state"]),
                       json.loads(r["detail"]), r["actor"], r["at"]) for r in rows]


@dataclasses.dataclass(frozen=True)
class ExportRow:
    """An export with what the follow-up and the commands need to act on it."""

    operator_id: str
    day: str
    file_name: str
    day_closed: Mapping[str, Any]
    state: ExportState
    last_event: ExportEvent | None
    created_at: dt.datetime
    entered_at: dt.datetime


_EXPORT_ROWS = (
    "SELECT f.operator_id, f.day, f.file_name, f.day_closed, f.created_at, t.to_state, t.event, t.at "
    "FROM export_file f LEFT JOIN LATERAL ("
    "  SELECT to_state, event, at FROM export_transition t WHERE t.operator_id = f.operator_id AND t.day = f.day"
    "  ORDER BY step DESC LIMIT 1) t ON true ")


def _export_row(row) -> ExportRow:
    return ExportRow(row["operator_id"], row["day"].isoformat(), row["file_name"], json.loads(row["day_closed"]),
                     ExportState(row["to_state"] or ExportState.PENDING.value),
                     ExportEvent(row["event"]) if row["event"] else None,
                     row["created_at"], row["at"] or row["created_at"])


async def open_exports(conn, states: frozenset[ExportState]) -> tuple[dt.datetime, list[ExportRow]]:
    """The database's clock and the exports now in one of `states`, oldest day first.

    The clock is the database's, so that every worker measures time-outs and deadlines alike.
    """
    now = await conn.fetchval("SELECT now()")
    rows = await conn.fetch(_EXPORT_ROWS + "WHERE coalesce(t.to_state, 'PENDING') = ANY($1::text[]) "
                            "ORDER BY f.day, f.operator_id", sorted(s.value for s in states))
    return now, [_export_row(r) for r in rows]


async def export_row(conn, operator_id: str, day: str) -> ExportRow:
    row = await conn.fetchrow(_EXPORT_ROWS + "WHERE f.operator_id = $1 AND f.day = $2",
                              operator_id, dt.date.fromisoformat(day))
    if row is None:
        raise LookupError(f"no export of {operator_id} for {day}")
    return _export_row(row)


async def database_now(conn) -> dt.datetime:
    return await conn.fetchval("SELECT now()")


async def export_state_counts(conn) -> dict[ExportState, int]:
    """How many exports are in each state now (for the alerting gauges)."""
    rows = await conn.fetch(
        "SELECT coalesce(t.to_state, 'PENDING') AS state, count(*) AS n FROM export_file f LEFT JOIN LATERAL ("
        "  SELECT to_state FROM export_transition t WHERE t.operator_id = f.operator_id AND t.day = f.day"
        "  ORDER BY step DESC LIMIT 1) t ON true GROUP BY 1")
    counts = {state: 0 for state in ExportState}
    counts.update({ExportState(r["state"]): r["n"] for r in rows})
    return counts


async def missing_archive_keys(conn, keys) -> list[str]:
    """Those of `keys` (in their order) that the archive table does not hold."""
    held = {r["object_key"] for r in await conn.fetch(
        "SELECT object_key FROM export_archive WHERE object_key = ANY($1::text[])", list(keys))}
    return [key for key in keys if key not in held]


async def record_archived(conn, operator_id: str, day: str, zip_sha256: str, kind: str, archived) -> None:
    """Record an object the archive read back and verified (`infra.archive.ArchivedObject`).
    Recording it again (two exporters archived the same object) is a no-op."""
    await conn.execute(
        "INSERT INTO export_archive (operator_id, day, zip_sha256, kind, object_key, sha256, size, version_id, "
        "retain_until) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (object_key) DO NOTHING",
        operator_id, dt.date.fromisoformat(day), zip_sha256, kind, archived.key, archived.sha256, archived.size,
        archived.version_id, archived.retain_until)


async def archived_objects(conn, operator_id: str, day: str) -> list[dict[str, Any]]:
    rows = await conn.fetch("SELECT zip_sha256, kind, object_key, sha256, size, version_id, retain_until, archived_at "
                            "FROM export_archive WHERE operator_id = $1 AND day = $2 ORDER BY archived_at, object_key",
                            operator_id, dt.date.fromisoformat(day))
    return [dict(r) for r in rows]


async def earlier_closes(conn, operator_id: str, day_sequence: int) -> dict[int, tuple[str, int]]:
    """day_sequence → (day, chain_head_seq) of the operator's files before `day_sequence`
    (`domain.file_scope.file_scope`)."""
    rows = await conn.fetch(
        "SELECT day_sequence, day, (day_closed->>'chain_head_seq')::bigint AS head FROM export_file "
        "WHERE operator_id = $1 AND day_sequence < $2", operator_id, day_sequence)
    return {row["day_sequence"]: (row["day"].isoformat(), row["head"]) for row in rows}


async def stored_file_scope(conn, closed: DayClosed) -> FileScope:
    """The scope of the file of `closed` from the operator's earlier files (ValueError when one
    is unknown): `domain.file_scope`."""
    earlier = await earlier_closes(conn, closed.operator_id, closed.day_sequence)
    return file_scope(closed.operator_id, closed.day, closed.day_sequence, closed.chain_head_seq, earlier)
