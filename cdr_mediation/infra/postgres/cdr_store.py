"""The CDR table: batched, idempotent appends and exact read-back for verification.

A new batch is copied straight into the table; a batch that meets stored keys is copied into a
temporary table and inserted with ON CONFLICT DO NOTHING, so delivering the same CDRs twice
(Faust is at-least-once) stores them once. A conflicting row that is *not*
the same entry — same (operator, chain_seq) or same cdr_id with a different hash — would mean two
different chains were produced; that is never absorbed silently but raised as a `ChainFork`, and
the store agent stops before committing its offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import operator
from collections.abc import AsyncIterator, Mapping, Sequence

import asyncpg

from cdr_mediation.domain.cdr import Cdr, CdrRecord, DlrStatus, RecordType, format_utc, parse_utc

ENTRY_COLUMNS = tuple(field.name for field in dataclasses.fields(Cdr))
COLUMNS = ENTRY_COLUMNS + ("record_hash",)
# What the store agent writes: the stored entry plus the trace context that chained it (telemetry,
# outside the hashed entry; migration 0009).
TRACED_COLUMNS = COLUMNS + ("trace_parent",)
_TIMESTAMPS = frozenset({"submitted_at", "done_at"})
_TIMESTAMP_INDEXES = tuple(ENTRY_COLUMNS.index(c) for c in sorted(_TIMESTAMPS))
_ENTRY_VALUES = operator.itemgetter(*ENTRY_COLUMNS)
_RECORD_TYPE_INDEX = ENTRY_COLUMNS.index("record_type")
_STATUS_INDEX = ENTRY_COLUMNS.index("status")
_RECORD_TYPES = {member.value: member for member in RecordType}
_STATUSES = {member.value: member for member in DlrStatus}
# Entry members a decoded entry may omit (`Cdr` defaults them to None): the adjustment references.
_ABSENT_AS_NULL = {f.name: None for f in dataclasses.fields(Cdr) if f.default is None}


class ChainFork(RuntimeError):
    """A stored entry and an incoming one claim the same place with different content."""


def cdr_row(cdr: Cdr, record_hash: str) -> tuple:
    return tuple(entry_row(cdr.to_entry(), record_hash))


def entry_row(entry: Mapping, record_hash: str) -> list:
    """The row of a chain entry (a JSON object as in `Cdr.to_entry`), in `COLUMNS` order.

    Timestamps become datetimes with `parse_utc`, which is exact at the entry's millisecond
    precision, so `row_to_mapping` renders them back (`format_utc`) to the same strings."""
    if len(entry) != len(ENTRY_COLUMNS):
        entry = {**_ABSENT_AS_NULL, **entry}
    row = list(_ENTRY_VALUES(entry))
    for index in _TIMESTAMP_INDEXES:
        row[index] = parse_utc(row[index])
    row.append(record_hash)
    return row


def row_to_mapping(row) -> dict:
    """A stored row as the chain verifier reads it: the entry exactly as stored (timestamps in the
    chain's format) plus `record_hash`. No validation: a tampered row must reach the verifier."""
    values = {c: (format_utc(row[c]) if c in _TIMESTAMPS else row[c]) for c in ENTRY_COLUMNS}
    values["record_hash"] = row["record_hash"]
    return values


def record_from_row(row: Sequence) -> CdrRecord:
    """The entry a stored row holds (a row of `COLUMNS`, in that order, as `iter_file_rows`
    yields) as a `CdrRecord`: `Cdr(*record)` equals `Cdr.from_entry` of its entry
    (`row_to_mapping` without ``record_hash``).

    Built straight from the row's values: the export converts tens of millions of rows, and the
    intermediate entry dict and keyword construction were a third of its CPU, the frozen
    dataclass's constructor a fifth of the rest (measured)."""
    values = list(row)
    del values[len(ENTRY_COLUMNS):]
    for index in _TIMESTAMP_INDEXES:
        values[index] = format_utc(values[index])
    return _record_of(values)


def _record_of(values: list) -> CdrRecord:
    """The record of an entry's values in `ENTRY_COLUMNS` order, timestamps already text."""
    values[_RECORD_TYPE_INDEX] = _member(RecordType, _RECORD_TYPES, values[_RECORD_TYPE_INDEX])
    values[_STATUS_INDEX] = _member(DlrStatus, _STATUSES, values[_STATUS_INDEX])
    return _record(values)


_record = CdrRecord._make

# What an export reads: `COLUMNS`, with the timestamps rendered by PostgreSQL in `format_utc`'s
# form (UTC, milliseconds, "Z"). The stored values are whole milliseconds (`entry_row`), so the
# text is exact; a test compares it with `format_utc` on every row it reads. Making a datetime per
# timestamp in asyncpg and formatting it here was a fifth of the export's per-record CPU.
EXPORT_COLUMNS = tuple(
    f"to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS {c}" if c in _TIMESTAMPS else c
    for c in COLUMNS)
_ENTRY_WIDTH = len(ENTRY_COLUMNS)


def record_from_export_row(row: Sequence) -> CdrRecord:
    """`record_from_row` for a row of `EXPORT_COLUMNS` (timestamps already text)."""
    return _record_of(list(tuple(row)[:_ENTRY_WIDTH]))  # tuple() of an asyncpg Record is its fastest copy


def _member(enum_type, members: Mapping, value):
    try:
        return members[value]
    except (KeyError, TypeError):
        return enum_type(value)  # raises ValueError for an unknown value, as `Cdr.from_entry` does


async def append_cdrs(conn, batch: Sequence[tuple[Cdr, str]]) -> int:
    """Append (cdr, record_hash) pairs in one transaction; returns how many rows were new."""
    return await append_rows(conn, [cdr_row(c, h) for c, h in batch])


async def append_entries(conn, batch: Sequence[tuple[Mapping, str]], *, trace_parent: str | None = None) -> int:
    """Append (entry, record_hash) pairs — entries as decoded from a cdr-batch record
    (`codecs.records.decode_cdr_entries`) — in one transaction; returns how many rows were new.

    `trace_parent` (the context that chained them) is kept beside each row, outside the entry: a
    later delivery of the same entries under another context changes nothing stored."""
    # An adjustment's item is (entry, record_hash, supersedes): only the entry is stored.
    rows = [entry_row(item[0], item[1]) for item in batch]
    for row in rows:
        row.append(trace_parent)
    return await append_rows(conn, rows, TRACED_COLUMNS)


async def append_rows(conn, rows: Sequence[Sequence], columns: Sequence[str] = COLUMNS) -> int:
    """Append rows in `columns` order (`COLUMNS`, or `TRACED_COLUMNS`) atomically: insert what
    is new, raise `ChainFork` if an existing row contradicts an incoming one (then nothing of the
    batch is stored).

    The usual batch is entirely new: one COPY straight into the table, a single atomic statement
    and one round trip. Only when that meets an existing key (a batch delivered again after a
    crash) does the batch take the careful path, `_merge_rows`."""
    if not rows:
        return 0
    try:
        await conn.copy_records_to_table("cdr", records=rows, columns=columns)
        return len(rows)
    except asyncpg.UniqueViolationError:
        return await _merge_rows(conn, rows, columns)


async def _merge_rows(conn, rows: Sequence[Sequence], column_names: Sequence[str]) -> int:
    """COPY into a temporary table, insert the rows that are new, and compare the others with
    what is stored.

    COPY rather than one INSERT over per-column arrays (`unnest`): asyncpg checks every array
    element against the collection ABCs, which made the store cost 22-25 µs per row instead of
    9-11 (measured, 125-row batches)."""
    columns = ", ".join(column_names)
    async with conn.transaction():
        await conn.execute("CREATE TEMP TABLE IF NOT EXISTS cdr_incoming (LIKE cdr INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
        await conn.copy_records_to_table("cdr_incoming", records=rows, columns=column_names)
        status = await conn.execute(
            f"INSERT INTO cdr ({columns}) SELECT {columns} FROM cdr_incoming ORDER BY operator_id, chain_seq "
            "ON CONFLICT DO NOTHING"
        )
        inserted = int(status.rsplit(" ", 1)[1])
        forks = await conn.fetch(
            """
            SELECT i.operator_id, i.chain_seq, i.cdr_id, c.chain_seq AS stored_seq, c.record_hash AS stored_hash,
                   i.record_hash AS incoming_hash
              FROM cdr_incoming i
              JOIN cdr c ON (c.operator_id = i.operator_id AND c.chain_seq = i.chain_seq) OR c.cdr_id = i.cdr_id
             WHERE c.record_hash <> i.record_hash OR c.cdr_id <> i.cdr_id OR c.chain_seq <> i.chain_seq
             LIMIT 5
            """
        )
        if forks:
            raise ChainFork("; ".join(
                f"{f['operator_id']} seq {f['chain_seq']} cdr {f['cdr_id']}: stored seq {f['stored_seq']} "
                f"hash {f['stored_hash'][:12]}…, incoming hash {f['incoming_hash'][:12]}…" for f in forks))
    return inserted


async def iter_chain(conn, operator_id: str, *, from_seq: int = 1, through_seq: int | None = None,
                     page: int = 10_000) -> AsyncIterator[dict]:
    """An operator's stored chain in chain_seq order (from `from_seq`, up to `through_seq` if
    given), paged (bounded memory for long chains)."""
    async for rows in iter_chain_pages(conn, operator_id, from_seq=from_seq, through_seq=through_seq, page=page):
        for row in rows:
            yield row


async def iter_chain_pages(conn, operator_id: str, *, from_seq: int = 1, through_seq: int | None = None,
                           page: int = 10_000) -> AsyncIterator[list[dict]]:
    """`iter_chain` a page at a time (for callers that verify or write a page in one step)."""
    next_seq = from_seq
    while True:
        rows = await conn.fetch(
            f"SELECT {', '.join(COLUMNS)} FROM cdr WHERE operator_id = $1 AND chain_seq >= $2 "
            "AND ($3::bigint IS NULL OR chain_seq <= $3::bigint) ORDER BY chain_seq LIMIT $4",
            operator_id, next_seq, through_seq, page,
        )
        if rows:
            yield [row_to_mapping(row) for row in rows]
        if len(rows) < page:
            return
        next_seq = rows[-1]["chain_seq"] + 1


@dataclasses.dataclass(frozen=True)
class FileRowsQuery:
    """Which stored rows an export file holds: `where` (a predicate over `cdr` with the
    placeholders $1 … $len(args)) within the chain_seq range [first_seq, last_seq]. One
    definition for reading, counting and splitting a file's rows."""

    where: str
    args: tuple
    first_seq: int
    last_seq: int

    def bounded(self, first_seq: int | None = None, last_seq: int | None = None) -> "FileRowsQuery":
        """The same rows, within a narrower chain_seq range."""
        return dataclasses.replace(
            self, first_seq=self.first_seq if first_seq is None else max(self.first_seq, first_seq),
            last_seq=self.last_seq if last_seq is None else min(self.last_seq, last_seq))

    def sql(self, select: str, tail: str = "") -> tuple[str, list]:
        """`SELECT {select} FROM cdr WHERE` the rows `{tail}`; the statement and its arguments
        (the range is the last two; `tail` may use ${len(args) + 3} on)."""
        n = len(self.args)
        return (f"SELECT {select} FROM cdr WHERE {self.where} AND chain_seq >= ${n + 1} AND chain_seq <= ${n + 2} "
                f"{tail}", [*self.args, self.first_seq, self.last_seq])


async def _day_query(conn, operator_id: str, start: dt.datetime, end: dt.datetime,
                     through_seq: int) -> FileRowsQuery | None:
    bounds = await conn.fetchrow(
        "SELECT min(chain_seq) AS lo, max(chain_seq) AS hi FROM cdr "
        "WHERE operator_id = $1 AND done_at >= $2 AND done_at < $3", operator_id, start, end)
    if bounds["lo"] is None or bounds["lo"] > through_seq:
        return None
    return FileRowsQuery("operator_id = $1 AND done_at >= $2 AND done_at < $3", (operator_id, start, end),
                         bounds["lo"], min(bounds["hi"], through_seq))


async def file_rows_query(conn, scope) -> FileRowsQuery | None:
    """The rows of an export file (`domain.file_scope.FileScope`); None when it holds none.

    The first file of an operator holds its day: its rows up to the close, found through the
    (operator_id, done_at) index. Later files read one range
    of the primary key — from the lower of the day's first chain_seq and the previous close's
    head, to this close's head — filtered by the two rules of the scope."""
    start = dt.datetime.fromisoformat(scope.day).replace(tzinfo=dt.timezone.utc)
    end = start + dt.timedelta(days=1)
    if not scope.carried_days or scope.after_seq >= scope.through_seq:
        return await _day_query(conn, scope.operator_id, start, end, scope.through_seq)
    day_lo = await conn.fetchval("SELECT min(chain_seq) FROM cdr WHERE operator_id = $1 AND done_at >= $2 "
                                 "AND done_at < $3", scope.operator_id, start, end)
    first_seq = min(day_lo if day_lo is not None else scope.after_seq + 1, scope.after_seq + 1)
    days = [dt.date.fromisoformat(day) for day in scope.carried_days]
    return FileRowsQuery("operator_id = $1 AND ((done_at >= $2 AND done_at < $3) "
                         "OR (chain_seq > $4 AND (done_at AT TIME ZONE 'UTC')::date = ANY($5::date[])))",
                         (scope.operator_id, start, end, scope.after_seq, days), first_seq, scope.through_seq)


async def iter_scope_rows(conn, scope, *, page: int = 10_000,
                          columns: Sequence[str] = COLUMNS) -> AsyncIterator[asyncpg.Record]:
    """The stored rows of an export file (`domain.file_scope.FileScope`), in chain order, paged."""
    query = await file_rows_query(conn, scope)
    if query is not None:
        async for row in iter_file_rows(conn, query, page=page, columns=columns):
            yield row


async def iter_file_rows(conn, query: FileRowsQuery, *, page: int = 10_000,
                         columns: Sequence[str] = COLUMNS) -> AsyncIterator[asyncpg.Record]:
    """The rows `query` names, in chain order, paged by chain_seq over the primary key.

    The next page is requested as soon as a page arrives, so PostgreSQL reads it (on another
    core) while the caller works through this one; `conn` is busy until the iteration ends."""
    statement, args = query.sql(", ".join(columns), f"ORDER BY chain_seq LIMIT ${len(query.args) + 3}")
    args.append(page)
    lower, last_seq = len(query.args), query.last_seq

    def fetch(from_seq: int) -> asyncio.Future:
        args[lower] = from_seq  # the range's lower end: this page's start
        return asyncio.ensure_future(conn.fetch(statement, *args))

    if query.first_seq > last_seq:
        return
    pending: asyncio.Future | None = fetch(query.first_seq)
    try:
        while pending is not None:
            rows = await pending
            pending = None
            if len(rows) == page and rows[-1]["chain_seq"] < last_seq:
                pending = fetch(rows[-1]["chain_seq"] + 1)
            for row in rows:
                yield row
    finally:
        if pending is not None:  # the caller stopped early: settle the read in flight before the connection is reused
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, asyncpg.PostgresError):
                await pending


async def first_met(conn, query: FileRowsQuery) -> tuple[int, list[str], list[str]]:
    """How many rows `query` names, and in their chain order: the SMSC ids as first met, and
    the UTC minutes ("YYYY-MM-DDThh:mm") as first met reading each row's submitted_at before
    its done_at. An encoder that numbers values as it meets them (TAP's recording entity and UTC
    offset codes) numbers the next rows as after reading these (`agents/export_part.py`)."""
    smsc, smsc_args = query.sql("smsc_id, min(chain_seq) AS met, count(*) AS rows", "GROUP BY smsc_id")
    by_smsc = await conn.fetch(f"SELECT smsc_id, rows FROM ({smsc}) s ORDER BY met", *smsc_args)
    deposits, args = query.sql("date_trunc('minute', submitted_at, 'UTC') AS minute, chain_seq * 2 AS met")
    completions, _ = query.sql("date_trunc('minute', done_at, 'UTC') AS minute, chain_seq * 2 + 1 AS met")
    minutes = await conn.fetch(f"SELECT minute FROM ({deposits} UNION ALL {completions}) m GROUP BY minute "
                               "ORDER BY min(met)", *args)
    return (sum(row["rows"] for row in by_smsc), [row["smsc_id"] for row in by_smsc],
            [format_utc(row["minute"])[:16] for row in minutes])


async def fetch_entry(conn, cdr_id: str) -> dict | None:
    """The stored entry with this cdr_id plus its `record_hash` (as `iter_chain` reads rows), or None."""
    row = await conn.fetchrow(f"SELECT {', '.join(COLUMNS)} FROM cdr WHERE cdr_id = $1", cdr_id)
    return None if row is None else row_to_mapping(row)


async def trace_parent_of(conn, cdr_id: str) -> str | None:
    """The W3C traceparent of the span that chained this entry (telemetry beside the row), or None."""
    return await conn.fetchval("SELECT trace_parent FROM cdr WHERE cdr_id = $1", cdr_id)


async def operators(conn) -> list[str]:
    return [r["operator_id"] for r in await conn.fetch("SELECT DISTINCT operator_id FROM cdr ORDER BY 1")]


async def stored_heads(conn, operator_ids: list[str] | None = None) -> dict[str, tuple[int, str]]:
    """operator_id → (highest chain_seq, its record_hash) as stored."""
    rows = await conn.fetch(
        "SELECT DISTINCT ON (operator_id) operator_id, chain_seq, record_hash FROM cdr "
        "WHERE $1::text[] IS NULL OR operator_id = ANY($1::text[]) ORDER BY operator_id, chain_seq DESC",
        operator_ids,
    )
    return {r["operator_id"]: (r["chain_seq"], r["record_hash"]) for r in rows}
