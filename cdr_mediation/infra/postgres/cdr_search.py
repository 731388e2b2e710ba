"""Reading stored chain entries for people (the portal's `GET /v1/cdrs`, docs/portal.md).

Pages are in chain order — (operator_id, chain_seq), the primary key — and continue after the
last key of the previous page (keyset pagination): a page costs the same at row 10 and at row
10 million, and entries appended meanwhile never shift a page.

Which index answers (migration 0001 and 0007):

* no msisdn: the primary key, walked from the cursor, the other filters applied on the way.
  Chains are written in event order, so a time window or a status fills its page within a short
  walk; a filter that matches nothing far ahead walks until the statement time-out
  (`portal/db.py`), which the caller answers as 503 ``query_timeout``.
* msisdn: ``cdr_msisdn (msisdn, operator_id, chain_seq)``: one number's entries, already in the
  answer's order; the other filters are applied on them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from cdr_mediation.infra.postgres.predicates import Predicates
from cdr_mediation.infra.postgres.cdr_store import COLUMNS, row_to_mapping

_SELECT = f"SELECT {', '.join(COLUMNS)} FROM cdr"


@dataclasses.dataclass(frozen=True)
class EntryFilters:
    operator_id: str | None = None
    start: dt.datetime | None = None  # done_at >= start
    end: dt.datetime | None = None  # done_at < end
    msisdn: str | None = None
    status: str | None = None
    record_type: str | None = None


async def search_entries(conn, filters: EntryFilters, *, after: tuple[str, int] | None, limit: int) -> list[dict]:
    """Up to `limit` stored entries (`row_to_mapping`: the entry plus ``record_hash``) matching
    every filter given, in (operator_id, chain_seq) order, after the key `after`."""
    where = Predicates()
    arg = where.arg
    if filters.msisdn is not None:
        where.add(f"msisdn = {arg(filters.msisdn)}")
    if filters.operator_id is not None:
        where.add(f"operator_id = {arg(filters.operator_id)}")
    if after is not None:
        where.add(f"(operator_id, chain_seq) > ({arg(after[0])}, {arg(after[1])}::bigint)")
    if filters.start is not None:
        where.add(f"done_at >= {arg(filters.start)}")
    if filters.end is not None:
        where.add(f"done_at < {arg(filters.end)}")
    if filters.status is not None:
        where.add(f"status = {arg(filters.status)}")
    if filters.record_type is not None:
        where.add(f"record_type = {arg(filters.record_type)}")
    statement = f"{_SELECT}{where.where()} ORDER BY operator_id, chain_seq LIMIT {arg(limit)}"
    rows = await conn.fetch(statement, *where.args)
    return [row_to_mapping(row) for row in rows]


async def adjustments_of(conn, cdr_id: str) -> list[dict]:
    """The entries that adjust `cdr_id` (VOID / CORRECT, `ref_cdr_id` = it), in chain order.
    Index ``cdr_ref_cdr_id`` (partial: only adjustments have a ref_cdr_id)."""
    rows = await conn.fetch(f"{_SELECT} WHERE ref_cdr_id = $1 ORDER BY operator_id, chain_seq", cdr_id)
    return [row_to_mapping(row) for row in rows]
