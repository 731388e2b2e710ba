"""``GET /v1/cdrs`` (search stored chain entries) and ``GET /v1/cdrs/{cdr_id}`` (one entry, its
adjustments, its export file and the trace context that chained it) — docs/portal.md.

Entries are served exactly as stored (`cdr_store.row_to_mapping`) with their ``record_hash``, so
a reader can recompute each hash (docs/chain.md §6). MSISDNs are in the answers (that is what the
callers are entitled to read) and never in a log line: the ``msisdn`` filter is redacted from the
access log (portal/access_log.py) and never quoted back in an error message.
"""

from __future__ import annotations

import re

from aiohttp import web
from opentelemetry import trace

from cdr_mediation.domain.cdr import DlrStatus, RecordType, format_utc
from cdr_mediation.infra.postgres import cdr_search, proof_store
from cdr_mediation.infra.postgres.cdr_store import fetch_entry, trace_parent_of
from cdr_mediation.infra.postgres.export_store import export_row
from cdr_mediation.observability.msisdn import MsisdnHasher
from cdr_mediation.observability.tracing import link_to
from cdr_mediation.portal import cursor, query
from cdr_mediation.portal.db import DATABASE
from cdr_mediation.portal.errors import ApiError
from cdr_mediation.portal.proofs import parse_cdr_id

LIST_PATH = "/v1/cdrs"
# Any segment reaches the handler, so a malformed id gets the JSON 400 (not the router's 404).
DETAIL_PATH = "/v1/cdrs/{cdr_id:[^/]+}"
LIST_PARAMETERS = ("operator_id", "from", "to", "msisdn", "status", "record_type", "limit", "cursor")
_OPERATOR = re.compile(r"[A-Za-z0-9_-]{1,64}")
MSISDN_HASHER = web.AppKey("msisdn_hasher", MsisdnHasher)


def _valid_position(after: list) -> bool:
    return (len(after) == 2 and isinstance(after[0], str) and _OPERATOR.fullmatch(after[0]) is not None
            and isinstance(after[1], int) and not isinstance(after[1], bool) and 1 <= after[1] < 2 ** 63)


def parse_list_query(request_query, hasher: MsisdnHasher) -> tuple[cdr_search.EntryFilters, tuple[str, int] | None, int]:
    params = query.checked(request_query, LIST_PARAMETERS)
    start, end = query.time_range(params)
    filters = cdr_search.EntryFilters(
        operator_id=query.operator_id(params), start=start, end=end, msisdn=query.msisdn(params),
        status=query.one_of(params, "status", {s.value for s in DlrStatus}),
        record_type=query.one_of(params, "record_type", {t.value for t in RecordType}))
    after = None
    if "cursor" in params:
        operator_id, chain_seq = cursor.decode(params["cursor"], "cdrs", _fingerprint(filters, hasher), _valid_position)
        after = (operator_id, chain_seq)
    return filters, after, query.limit(params)


def _fingerprint(filters: cdr_search.EntryFilters, hasher: MsisdnHasher) -> dict:
    # The number as its keyed reference: the cursor's filter digest is a plain SHA-256, and over
    # an unkeyed number it could be reversed by trying every number of a country's plan.
    msisdn = None if filters.msisdn is None else hasher.reference(filters.msisdn)
    return {"operator_id": filters.operator_id, "msisdn": msisdn, "status": filters.status,
            "record_type": filters.record_type,
            "from": None if filters.start is None else format_utc(filters.start),
            "to": None if filters.end is None else format_utc(filters.end)}


async def list_cdrs(request: web.Request) -> web.Response:
    hasher = request.app[MSISDN_HASHER]
    filters, after, limit = parse_list_query(request.query, hasher)
    async with request.app[DATABASE].connection(what="CDRs") as conn:
        # One row beyond the page says whether there is a next page, without a count.
        rows = await cdr_search.search_entries(conn, filters, after=after, limit=limit + 1)
    page, more = rows[:limit], len(rows) > limit
    next_cursor = (cursor.encode("cdrs", [page[-1]["operator_id"], page[-1]["chain_seq"]], _fingerprint(filters, hasher))
                   if more else None)
    return web.json_response({"items": page, "next_cursor": next_cursor})


async def get_cdr(request: web.Request) -> web.Response:
    cdr_id = parse_cdr_id(request.match_info["cdr_id"])
    query.checked(request.query, ())
    async with request.app[DATABASE].connection(what="CDRs") as conn:
        async with conn.transaction(isolation="repeatable_read", readonly=True):  # one view of entry and file
            entry = await fetch_entry(conn, cdr_id)
            if entry is None:
                raise ApiError(404, "unknown_cdr", f"no stored CDR {cdr_id} (CDRs past the hot window are in the "
                                                   "cold tier: restore them first)")
            adjustments = await cdr_search.adjustments_of(conn, cdr_id)
            export = await _export_of(conn, entry)
            trace_parent = await trace_parent_of(conn, cdr_id)
    if (link := link_to(trace_parent)) is not None:
        # This request's trace points at the one that chained the entry (DLR → ingest → store).
        trace.get_current_span().add_link(link.context, {"cdr.link": "chained_by"})
    return web.json_response({"entry": entry, "adjustments": adjustments, "export": export,
                              "trace_parent": trace_parent})


async def _export_of(conn, entry: dict) -> dict | None:
    """The file that holds the entry by the proofs' rule (proof_store.holding_file), with its
    current state; None while no file holds it (day not closed yet, or it arrived after)."""
    try:
        holding = await proof_store.holding_file(conn, entry)
    except proof_store.ProofUnavailable:
        return None
    row = await export_row(conn, holding.operator_id, holding.day)
    return {"operator_id": row.operator_id, "day": row.day, "file_name": row.file_name, "state": row.state.value}


def add_routes(app: web.Application, *, hasher: MsisdnHasher) -> None:
    app[MSISDN_HASHER] = hasher
    app.router.add_get(LIST_PATH, list_cdrs)
    app.router.add_get(DETAIL_PATH, get_cdr)
