"""``GET /v1/audit``: the hash-chained audit log, for admins and auditors (docs/audit.md,
docs/portal.md). Entries are served exactly as stored with their ``entry_hash``, so a page can be
re-verified (docs/audit.md §4) by anyone who also holds the entry before it.

Filters: ``action``, ``actor``, ``from`` / ``to`` (on ``at``, half-open), ``ref`` (``KEY:VALUE``,
e.g. ``operator_id:op-a``, ``file_name:CD…``, ``day:2026-11-03``; repeatable, all must match: an
entry matches if its ``refs`` contain each pair — the GIN index on refs answers it). Pages in
``audit_seq`` order, continued with the opaque ``next_cursor``.
"""

from __future__ import annotations

import re

from aiohttp import web

from cdr_mediation.infra.postgres.audit_store import read_audit
from cdr_mediation.portal import cursor, query
from cdr_mediation.portal.db import DATABASE

PATH = "/v1/audit"
PARAMETERS = ("action", "actor", "from", "to", "ref", "limit", "cursor")
MAX_REFS = 5
_ACTION = r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+"
_REF = re.compile(r"([a-z][a-z0-9_]{0,63}):([ -~]{1,200})")
_PRINTABLE = r"[ -~]{1,200}"


def _at(moment) -> str:
    """An instant in the log's own `at` form (docs/audit.md §2), which sorts as time."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_audit_query(request_query) -> tuple[dict, int, int]:
    refs_given = request_query.getall("ref", [])
    if len(refs_given) > MAX_REFS:
        raise query.bad_request(f"at most {MAX_REFS} ref filters")
    # `ref` may repeat; every other parameter is checked as on the other lists.
    others = _MultiKeys([(k, v) for k, v in request_query.items() if k != "ref"])
    params = query.checked(others, PARAMETERS)
    refs: dict[str, str] = {}
    for text in refs_given:
        match = _REF.fullmatch(text)
        if match is None:
            raise query.bad_request(f"ref={text[:80]!r} is not KEY:VALUE such as operator_id:op-a")
        if match[1] in refs:
            raise query.bad_request(f"ref key {match[1]} given more than once")
        refs[match[1]] = match[2]
    start, end = query.time_range(params)
    filters = {
        "action": None if "action" not in params else query.matching("action", params["action"], _ACTION,
                                                                      "export.transition"),
        "actor": None if "actor" not in params else query.matching("actor", params["actor"], _PRINTABLE, "exporter"),
        "since": None if start is None else _at(start),
        "until": None if end is None else _at(end),
        "refs": refs or None,
    }
    after = 0
    if "cursor" in params:
        (after,) = cursor.decode(params["cursor"], "audit", filters, _valid_position)
    return filters, after, query.limit(params)


class _MultiKeys:
    """(key, value) pairs seen through the mapping interface `query.checked` reads (repeats kept)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs

    def keys(self) -> list[str]:
        return [k for k, _ in self._pairs]

    def __getitem__(self, key: str) -> str:
        return next(v for k, v in self._pairs if k == key)


def _valid_position(after: list) -> bool:
    return (len(after) == 1 and isinstance(after[0], int) and not isinstance(after[0], bool)
            and 1 <= after[0] < 2 ** 63)


async def list_audit(request: web.Request) -> web.Response:
    filters, after, limit = parse_audit_query(request.query)
    async with request.app[DATABASE].connection(what="the audit log") as conn:
        entries, next_after = await read_audit(conn, action=filters["action"], actor=filters["actor"],
                                               refs=filters["refs"], since=filters["since"], until=filters["until"],
                                               after_seq=after, limit=limit)
    return web.json_response({
        "items": [entry.to_row() for entry in entries],
        "next_cursor": None if next_after is None else cursor.encode("audit", [next_after], filters),
    })


def add_routes(app: web.Application) -> None:
    app.router.add_get(PATH, list_audit)
