"""Export files with their current state, for the portal's `GET /v1/exports` (docs/portal.md).

Pages in primary-key order (operator_id, day) after the last key of the previous page. There is
one file per operator and day, so even years of files are a small table; the current state is the
last step of each file's history (the same rule as `export_store.current_state`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from cdr_mediation.domain.export_lifecycle import ExportState

_LATEST = (
    "SELECT f.operator_id, f.day, f.day_sequence, f.file_name, f.created_at, "
    "coalesce(t.to_state, 'PENDING') AS state, t.event AS last_event, coalesce(t.at, f.created_at) AS state_since, "
    "coalesce(t.step, 0) AS steps "
    "FROM export_file f LEFT JOIN LATERAL ("
    "  SELECT to_state, event, at, step FROM export_transition t WHERE t.operator_id = f.operator_id AND t.day = f.day"
    "  ORDER BY step DESC LIMIT 1) t ON true")

from cdr_mediation.infra.postgres.predicates import Predicates


@dataclasses.dataclass(frozen=True)
class ExportFilters:
    operator_id: str | None = None
    day: dt.date | None = None
    from_day: dt.date | None = None  # day >= from_day
    to_day: dt.date | None = None  # day < to_day
    state: ExportState | None = None


def export_summary(row) -> dict:
    return {"operator_id": row["operator_id"], "day": row["day"].isoformat(), "day_sequence": row["day_sequence"],
            "file_name": row["file_name"], "state": row["state"], "last_event": row["last_event"],
            "steps": row["steps"], "created_at": _utc(row["created_at"]), "state_since": _utc(row["state_since"])}


def _utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


async def search_exports(conn, filters: ExportFilters, *, after: tuple[str, dt.date] | None, limit: int) -> list[dict]:
    where = Predicates()
    arg = where.arg
    if filters.operator_id is not None:
        where.add(f"f.operator_id = {arg(filters.operator_id)}")
    if filters.day is not None:
        where.add(f"f.day = {arg(filters.day)}")
    if filters.from_day is not None:
        where.add(f"f.day >= {arg(filters.from_day)}")
    if filters.to_day is not None:
        where.add(f"f.day < {arg(filters.to_day)}")
    if after is not None:
        where.add(f"(f.operator_id, f.day) > ({arg(after[0])}, {arg(after[1])}::date)")
    if filters.state is not None:
        where.add(f"coalesce(t.to_state, 'PENDING') = {arg(filters.state.value)}")
    statement = f"{_LATEST}{where.where()} ORDER BY f.operator_id, f.day LIMIT {arg(limit)}"
    rows = await conn.fetch(statement, *where.args)
    return [export_summary(row) for row in rows]


async def find_export(conn, operator_id: str, day: dt.date) -> dict | None:
    row = await conn.fetchrow(f"{_LATEST} WHERE f.operator_id = $1 AND f.day = $2", operator_id, day)
    return None if row is None else export_summary(row)
