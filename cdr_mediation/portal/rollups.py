"""``GET /v1/rollups?operator=&from=&to=``: an operator's hourly rollups, closed and open (issue 4).

Lists every hour overlapping ``[from, to)`` (ISO 8601 instants with an offset; hour-aligned or
not; at most 31 days), in order, each with its window ``[hour_start, hour_end)`` and ``closed``.

Two sources, read in this order:

1. The operator's open state from the Faust table `rollup-state`, via the workers' web servers
   (``CDR_WORKER_URLS``, tried in order; a worker that is down or cannot answer is skipped). Any
   worker routes the request to the one that owns the operator's partition
   (`cdr_mediation.agents.rollup_web`), so it does not matter which one answers.
2. The closes stored in PostgreSQL (`rollup_closed`, `fetch_closes`).

Per hour:

* Closes stored → ``closed: true``; ``values`` = revision 0 merged with its correction deltas
  (`domain.rollup.merge`), ``revisions`` = each stored revision with its own values. PostgreSQL
  wins over the table: the rollup agent emits a close before it records its new state.
* No close stored, but the owner's state says the stream closed the hour (``hour <=
  closed_through``) → ``closed: true``, ``values: null``, ``revisions: []``: the close is on its
  way to PostgreSQL (ask again), or the hour precedes the operator's first closed hour and never
  had an event (a late event there would be emitted as a backfill revision 0).
* Otherwise → ``closed: false``; ``values`` = the table's totals so far (an empty rollup for an
  hour without events yet).
* ``pending_correction``: late events the table holds for a closed hour that the next regular
  close will emit as its next revision (a delta, not included in ``values``); else null.

Errors: ``{"error": {"code", "message"}}`` — 400 ``bad_request``, 503 ``workers_unavailable`` /
``database_unavailable`` / ``not_configured``, 502 ``bad_worker_response``, 500 ``internal``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
from aiohttp import web

from cdr_mediation.portal.db import PortalDatabase
from cdr_mediation.portal.errors import ApiError
from cdr_mediation.portal.query import bad_request, checked, parse_instant
from cdr_mediation.domain.cdr import format_utc
from cdr_mediation.domain.dlr import PATTERNS
from cdr_mediation.domain.rollup import (
    HourRollup,
    OperatorRollupState,
    RollupClosed,
    hour_after,
    rollups_from_closes,
)

log = logging.getLogger(__name__)

PATH = "/v1/rollups"
MAX_RANGE = dt.timedelta(days=31)
PARAMETERS = ("operator", "from", "to")
WORKER_TIMEOUT_S = 15.0  # above the worker's own forwarding timeout (10 s): one hop fits
_OPERATOR = re.compile(PATTERNS["operator_id"])
_UTC = dt.timezone.utc
_STATE_FIELDS = tuple(field.name for field in dataclasses.fields(OperatorRollupState))


# --- pure parts ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RollupQuery:
    operator_id: str
    start: dt.datetime  # aware, UTC
    end: dt.datetime  # aware, UTC, > start

    @property
    def hours(self) -> list[str]:
        return hours_overlapping(self.start, self.end)


def parse_query(query: Mapping[str, str] | Any) -> RollupQuery:
    """The request's parameters, checked; every problem is a 400 with a message saying which."""
    query = checked(query, PARAMETERS)
    missing = [name for name in PARAMETERS if not query.get(name)]
    if missing:
        raise bad_request(f"missing parameter(s) {', '.join(missing)}: "
                          "GET /v1/rollups?operator=<id>&from=<instant>&to=<instant>")
    operator_id = query["operator"]
    if not _OPERATOR.fullmatch(operator_id):
        raise bad_request(f"operator={operator_id!r} is not an operator id ({PATTERNS['operator_id']})")
    start, end = parse_instant("from", query["from"]), parse_instant("to", query["to"])
    if start >= end:
        raise bad_request(f"from ({format_utc(start)}) must be before to ({format_utc(end)})")
    if end - start > MAX_RANGE:
        raise bad_request(f"the range {format_utc(start)} .. {format_utc(end)} is longer than 31 days; "
                          "ask for it in parts")
    try:
        hour_after(hours_overlapping(start, end)[-1])
    except OverflowError:
        raise bad_request("the range reaches beyond the year 9999") from None
    return RollupQuery(operator_id, start, end)


def hours_overlapping(start: dt.datetime, end: dt.datetime) -> list[str]:
    """Starts of the hours that overlap ``[start, end)``, ascending (``format_utc`` form)."""
    hour = start.astimezone(_UTC).replace(minute=0, second=0, microsecond=0)
    hours = []
    while hour < end:
        hours.append(format_utc(hour))
        hour += dt.timedelta(hours=1)
    return hours


def state_from_worker(body: Any, operator_id: str) -> OperatorRollupState:
    """The operator's table value from a worker's ``/rollups/open/{operator}`` answer (checked)."""
    if not isinstance(body, dict):
        raise ValueError("the answer is not a JSON object")
    missing = [name for name in _STATE_FIELDS if name not in body]
    if missing:
        raise ValueError(f"the answer lacks {missing}")
    try:
        state = OperatorRollupState.from_dict({name: body[name] for name in _STATE_FIELDS})
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ValueError(f"the answer is not a rollup state: {exc}") from None
    if state.operator_id != operator_id:
        raise ValueError(f"the answer is about operator {state.operator_id!r}, not {operator_id!r}")
    return state


def _revision(close: RollupClosed) -> dict[str, Any]:
    return {
        "revision": close.revision,
        "closed_by": close.closed_by,
        "chain_head_seq": close.chain_head_seq,
        "chain_head_hash": close.chain_head_hash,
        "watermark": close.watermark,
        "values": close.rollup.to_dict(),
    }


def rollups_response(query: RollupQuery, closes: Sequence[RollupClosed], state: OperatorRollupState) -> dict[str, Any]:
    """The JSON answer: closed hours from the stored `closes`, open hours from the table `state`."""
    operator_id = query.operator_id
    hours = query.hours
    wanted = set(hours)
    mine = [close for close in closes if close.operator_id == operator_id and close.hour_start in wanted]
    merged = rollups_from_closes(mine)
    revisions: dict[str, list[RollupClosed]] = {}
    for close in sorted(mine, key=lambda c: (c.hour_start, c.revision)):
        revisions.setdefault(close.hour_start, []).append(close)
    closed_through = state.closed_through

    listed = []
    for hour in hours:
        pending = state.pending_corrections.get(hour)
        if hour in merged:
            closed, values = True, merged[hour].to_dict()
        elif closed_through is not None and hour <= closed_through:
            closed, values = True, None
        else:
            rollup = state.open_hours.get(hour) or HourRollup.empty(operator_id, hour, state.currency)
            closed, values = False, rollup.to_dict()
        listed.append({
            "hour_start": hour,
            "hour_end": hour_after(hour),
            "closed": closed,
            "values": values,
            "revisions": [_revision(close) for close in revisions.get(hour, ())],
            "pending_correction": pending.to_dict() if closed and pending is not None else None,
        })
    return {
        "operator_id": operator_id,
        "from": format_utc(query.start),
        "to": format_utc(query.end),
        "watermark": state.watermark,
        "closed_through": closed_through,
        "hours": listed,
    }


def parse_worker_urls(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``CDR_WORKER_URLS`` (comma-separated) or a list, as base URLs without a trailing slash."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(item.strip().rstrip("/") for item in items if item.strip())


# --- I/O ----------------------------------------------------------------------------------------


class RollupSources:
    """The workers (open state) and PostgreSQL (closes) the handler reads."""

    def __init__(self, database: PortalDatabase, worker_urls: Sequence[str]) -> None:
        self.database = database  # the portal's shared pool (portal/db.py)
        self.worker_urls = tuple(worker_urls)
        self._session: aiohttp.ClientSession | None = None

    async def open_state(self, operator_id: str) -> OperatorRollupState:
        if not self.worker_urls:
            raise ApiError(503, "not_configured", "no worker URLs configured (CDR_WORKER_URLS): open hours unknown")
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WORKER_TIMEOUT_S))
        failures = []
        for base in self.worker_urls:
            url = f"{base}/rollups/open/{operator_id}"
            try:
                async with self._session.get(url) as response:
                    text = await response.text()
                    if response.status != 200:
                        failures.append(f"{base}: HTTP {response.status} {_error_text(text)}")
                        continue
                    try:
                        return state_from_worker(await response.json(content_type=None), operator_id)
                    except ValueError as exc:
                        raise ApiError(502, "bad_worker_response", f"{base} gave an unusable answer: {exc}") from None
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                failures.append(f"{base}: {exc.__class__.__name__} {exc}".rstrip())
        raise ApiError(503, "workers_unavailable",
                       "no worker could give the open hours; " + "; ".join(failures))

    async def closes(self, query: RollupQuery) -> list[RollupClosed]:
        from cdr_mediation.infra.postgres.rollup_store import fetch_closes

        hours = query.hours
        async with self.database.connection(what="closed hours") as conn:
            return await fetch_closes(conn, operator_id=query.operator_id, start=hours[0], end=hour_after(hours[-1]))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _error_text(text: str) -> str:
    """A worker's error answer, short: its code and message when it is ours."""
    import json

    try:
        error = json.loads(text)["error"]
        return f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return text[:200]


SOURCES_KEY = web.AppKey("rollup_sources", RollupSources)


async def get_rollups(request: web.Request) -> web.Response:
    sources = request.app[SOURCES_KEY]
    try:
        query = parse_query(request.query)
        # The table first, then PostgreSQL: an hour the table saw closed is then in PostgreSQL
        # unless its close is still on the way (a rollup-closed record not yet stored).
        state = await sources.open_state(query.operator_id)
        closes = await sources.closes(query)
        return web.json_response(rollups_response(query, closes, state))
    except ApiError as exc:
        if exc.status >= 500:
            log.warning("rollup read failed", extra={"code": exc.code, "detail": exc.message})
        return exc.response()
    except Exception as exc:  # noqa: BLE001 - one JSON error shape, never an HTML 500
        log.exception("rollup read failed")
        return ApiError(500, "internal", f"{exc.__class__.__name__}: {exc}").response()


def add_rollup_routes(app: web.Application, *, database: PortalDatabase, worker_urls: Sequence[str]) -> None:
    app[SOURCES_KEY] = RollupSources(database, worker_urls)

    async def close_sources(app: web.Application) -> None:
        await app[SOURCES_KEY].close()

    app.on_cleanup.append(close_sources)
    app.router.add_get(PATH, get_rollups)
