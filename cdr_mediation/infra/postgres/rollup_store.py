"""The closed-rollup table: idempotent appends of `RollupClosed` and exact read-back.

The rollup agent emits a close before it records the state that says it was emitted, so after a
crash the same close is emitted again with identical values (docs/rollups.md). Storing it again
is absorbed. A different value under a stored key (operator, hour, revision) would mean two
different rollups of the same stream: that is never absorbed but raised as `RollupConflict`, and
nothing of its batch is stored. As for CDRs (`cdr_store`): a new batch is copied straight into
the table; a batch that meets stored keys goes through a temporary table.

Also here: the rollup's reads of the CDR table for reconciliation (entries by event time), built
on `cdr_store.COLUMNS` / `row_to_mapping` so entries come back exactly as chained.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from cdr_mediation.domain.cdr import format_utc, parse_utc
from cdr_mediation.domain.rollup import ADJUSTMENT_TYPES, STATUSES, HourRollup, RollupClosed
from cdr_mediation.infra.postgres import cdr_store

TABLE = "rollup_closed"
COUNT_COLUMNS = tuple(f"count_{status.lower()}" for status in STATUSES)
ADJUSTMENT_COLUMNS = tuple(f"adjustments_{kind.lower()}" for kind in ADJUSTMENT_TYPES)
# Everything a close consists of, in row order (stored_at is the table's, not the close's).
COLUMNS = (
    "operator_id", "hour_start", "revision", "closed_by", "currency", *COUNT_COLUMNS, "records",
    "billable_records", "billable_segments", "amount_minor", "tax_minor", *ADJUSTMENT_COLUMNS,
    "first_chain_seq", "last_chain_seq", "chain_head_seq", "chain_head_hash", "watermark",
)
_KEY = ("operator_id", "hour_start", "revision")
_SELECT = ", ".join(COLUMNS)
_ORDER = "ORDER BY operator_id, hour_start, revision"


class RollupConflict(RuntimeError):
    """A close and a stored (or batch-mate) close share a key but not their values."""


def close_row(close: RollupClosed) -> tuple:
    """The row of a close, in `COLUMNS` order (hour and watermark as UTC datetimes)."""
    rollup = close.rollup
    return (
        rollup.operator_id, parse_utc(rollup.hour_start), close.revision, close.closed_by, rollup.currency,
        *(rollup.counts[status] for status in STATUSES), rollup.records, rollup.billable_records,
        rollup.billable_segments, rollup.amount_minor, rollup.tax_minor,
        *(rollup.adjustments[kind] for kind in ADJUSTMENT_TYPES), rollup.first_chain_seq, rollup.last_chain_seq,
        close.chain_head_seq, close.chain_head_hash, parse_utc(close.watermark),
    )


def row_to_close(row) -> RollupClosed:
    """A stored row as the `RollupClosed` it was made from (equal to it, field by field)."""
    rollup = HourRollup(
        operator_id=row["operator_id"],
        hour_start=format_utc(row["hour_start"]),
        currency=row["currency"],
        counts={status: row[column] for status, column in zip(STATUSES, COUNT_COLUMNS)},
        records=row["records"],
        billable_records=row["billable_records"],
        billable_segments=row["billable_segments"],
        amount_minor=row["amount_minor"],
        tax_minor=row["tax_minor"],
        first_chain_seq=row["first_chain_seq"],
        last_chain_seq=row["last_chain_seq"],
        adjustments={kind: row[column] for kind, column in zip(ADJUSTMENT_TYPES, ADJUSTMENT_COLUMNS)},
    )
    return RollupClosed(rollup, row["revision"], row["chain_head_seq"], row["chain_head_hash"], row["closed_by"],
                        format_utc(row["watermark"]))


async def append_closes(conn, closes: Sequence[RollupClosed]) -> int:
    """Store closes atomically; returns how many were new.

    A close already stored with identical values is absorbed (a re-emission); one whose key is
    stored (or repeated in the batch) with other values raises `RollupConflict`, and then nothing
    of the batch is stored. Constraint violations of the table (e.g. a close without currency)
    raise the driver's error, also storing nothing.

    Each path runs in its own transaction (a savepoint when the caller has one open), so a
    caller's transaction survives the fast path meeting a stored key.
    """
    rows: dict[tuple, tuple] = {}
    for close in closes:
        row = close_row(close)
        key = row[:3]
        prior = rows.setdefault(key, row)
        if prior != row:
            raise RollupConflict(f"{_describe(key)}: given twice in one batch with different values")
    if not rows:
        return 0
    records = list(rows.values())
    try:
        async with conn.transaction():
            await conn.copy_records_to_table(TABLE, records=records, columns=COLUMNS)
        return len(records)
    except asyncpg.UniqueViolationError:
        return await _merge_rows(conn, records)


async def _merge_rows(conn, records: list[tuple]) -> int:
    """Insert the new rows of a batch that meets stored keys; compare the others with what is stored."""
    columns = ", ".join(COLUMNS)
    async with conn.transaction():
        await conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS rollup_closed_incoming (LIKE {TABLE} INCLUDING DEFAULTS) "
            "ON COMMIT DELETE ROWS"
        )
        await conn.copy_records_to_table("rollup_closed_incoming", records=records, columns=COLUMNS)
        status = await conn.execute(
            f"INSERT INTO {TABLE} ({columns}) SELECT {columns} FROM rollup_closed_incoming {_ORDER} "
            "ON CONFLICT DO NOTHING"
        )
        inserted = int(status.rsplit(" ", 1)[1])
        stored = ", ".join(f"s.{c}" for c in COLUMNS)
        incoming = ", ".join(f"i.{c}" for c in COLUMNS)
        conflicts = await conn.fetch(
            f"""
            SELECT {', '.join(f'i.{c}' for c in _KEY)}
              FROM rollup_closed_incoming i
              JOIN {TABLE} s USING ({', '.join(_KEY)})
             WHERE ({stored}) IS DISTINCT FROM ({incoming})
             ORDER BY 1, 2, 3
             LIMIT 5
            """
        )
        if conflicts:
            raise RollupConflict("; ".join(
                f"{_describe(tuple(c))}: stored with other values" for c in conflicts))
    return inserted


def _describe(key: tuple) -> str:
    operator_id, hour, revision = key
    return f"operator {operator_id!r} hour {format_utc(hour)} revision {revision}"


def _instant(value: dt.datetime | str) -> dt.datetime:
    """An aware datetime from a datetime or a `format_utc`-style string (naive ones refused)."""
    if isinstance(value, str):
        return parse_utc(value)
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{value!r} is not timezone-aware")
    return value


async def fetch_closes(
    conn, *, operator_id: str | None = None, start: dt.datetime | str, end: dt.datetime | str
) -> list[RollupClosed]:
    """Stored closes with ``start <= hour_start < end`` (of one operator, or all), ordered by
    operator, hour and revision."""
    rows = await conn.fetch(
        f"SELECT {_SELECT} FROM {TABLE} WHERE ($1::text IS NULL OR operator_id = $1) "
        f"AND hour_start >= $2 AND hour_start < $3 {_ORDER}",
        operator_id, _instant(start), _instant(end),
    )
    return [row_to_close(row) for row in rows]


@dataclass(frozen=True)
class ClosedExtent:
    """What an operator's stored closes cover, over all time."""

    first_hour: str  # earliest hour_start closed
    last_hour: str  # latest hour_start closed
    head_seq: int  # largest chain_head_seq: every entry up to it has been seen by the closes


async def closed_extent(conn, operator_id: str) -> ClosedExtent | None:
    """The operator's closed extent, or None if it has no stored close."""
    row = await conn.fetchrow(
        f"SELECT min(hour_start) AS first_hour, max(hour_start) AS last_hour, max(chain_head_seq) AS head_seq "
        f"FROM {TABLE} WHERE operator_id = $1",
        operator_id,
    )
    if row["first_hour"] is None:
        return None
    return ClosedExtent(format_utc(row["first_hour"]), format_utc(row["last_hour"]), row["head_seq"])


async def operators_with_activity(conn, start: dt.datetime | str, end: dt.datetime | str) -> list[str]:
    """Operators with a CDR entry (``done_at``) or a stored close (``hour_start``) in [start, end), sorted.

    The CDR side walks the distinct operators along the primary key (one index probe per
    operator) and asks the (operator_id, done_at) index, rather than scanning the table.
    """
    rows = await conn.fetch(
        f"""
        WITH RECURSIVE ops AS (
            (SELECT operator_id FROM cdr ORDER BY operator_id LIMIT 1)
            UNION ALL
            SELECT (SELECT c.operator_id FROM cdr c WHERE c.operator_id > ops.operator_id
                     ORDER BY c.operator_id LIMIT 1)
              FROM ops WHERE ops.operator_id IS NOT NULL
        )
        SELECT operator_id FROM ops
         WHERE operator_id IS NOT NULL
           AND EXISTS (SELECT 1 FROM cdr c WHERE c.operator_id = ops.operator_id
                          AND c.done_at >= $1 AND c.done_at < $2)
        UNION
        SELECT operator_id FROM {TABLE} WHERE hour_start >= $1 AND hour_start < $2
        ORDER BY 1
        """,
        _instant(start), _instant(end),
    )
    return [row["operator_id"] for row in rows]


async def fetch_entries_by_event_time(
    conn, operator_id: str, start: dt.datetime | str, end: dt.datetime | str
) -> list[dict]:
    """An operator's stored chain entries with ``start <= done_at < end``, in chain_seq order,
    exactly as chained (`cdr_store.row_to_mapping`: entry plus ``record_hash``)."""
    rows = await conn.fetch(
        f"SELECT {', '.join(cdr_store.COLUMNS)} FROM cdr WHERE operator_id = $1 AND done_at >= $2 AND done_at < $3 "
        "ORDER BY chain_seq",
        operator_id, _instant(start), _instant(end),
    )
    return [cdr_store.row_to_mapping(row) for row in rows]


async def operator_currency(conn, operator_id: str) -> str | None:
    """The currency of the operator's first stored entry (what its rollups are in), or None."""
    return await conn.fetchval(
        "SELECT currency FROM cdr WHERE operator_id = $1 ORDER BY chain_seq LIMIT 1", operator_id)
