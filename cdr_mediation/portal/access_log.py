"""The API's access log: one JSON line per request, with the MSISDN filter redacted.

``GET /v1/cdrs?msisdn=%2B447700900123`` carries a subscriber's number in the query string.
aiohttp's default access log prints the raw request line, and the JSON formatter's last line of
defence (observability/jsonlog.py) does not recognise a number behind ``%2B``. So the line is
built here from the decoded parameters, with ``msisdn`` replaced by its keyed reference
(observability/msisdn.py: the same number gives the same reference, so support can still join
lines) — the number itself never reaches a handler of the logger.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from cdr_mediation.observability.msisdn import MsisdnHasher
from cdr_mediation.portal.auth import CALLER

LOGGER = logging.getLogger("cdr_mediation.portal.access")
REDACTED_PARAMETERS = frozenset({"msisdn"})


def redacted_query(request: web.BaseRequest, hasher: MsisdnHasher | None) -> dict[str, str | list[str]]:
    logged: dict[str, str | list[str]] = {}
    for name, value in request.query.items():
        if name in REDACTED_PARAMETERS:
            value = hasher.reference(value) if hasher is not None else "[redacted]"
        previous = logged.get(name)
        logged[name] = value if previous is None else [*([previous] if isinstance(previous, str) else previous),
                                                       value]
    return logged


class PortalAccessLog(AbstractAccessLogger):
    hasher: MsisdnHasher | None = None

    @classmethod
    def with_hasher(cls, hasher: MsisdnHasher | None) -> type["PortalAccessLog"]:
        return type("PortalAccessLog", (cls,), {"hasher": hasher})

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        caller = request.get(CALLER)
        self.logger.info("request", extra={
            "method": request.method,
            "path": request.path,  # decoded; no route carries an MSISDN in its path
            "query": redacted_query(request, self.hasher),
            "status": response.status,
            "bytes": response.body_length,
            "seconds": round(time, 4),
            "role": caller.role.value if caller else None,
            "actor": caller.actor if caller else None,
        })
