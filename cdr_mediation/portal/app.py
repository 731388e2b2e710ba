"""The aiohttp portal: the API behind mutual TLS with roles from client certificates
(docs/portal.md) — the rollup read path (`GET /v1/rollups`, rollups.py), inclusion proofs
(`GET /v1/cdrs/{cdr_id}/proof`, proofs.py), CDR search (cdrs.py), export files and their
archived evidence (exports.py), the audit log (audit.py) and the OpenAPI document (openapi.py)
— and a plain probe listener for health, readiness and metrics.

`/healthz` answers while the event loop runs (liveness: restart me if this fails). `/readyz`
asks Kafka, PostgreSQL and the HSM a real question each and answers 503 with the reasons when
any of them cannot serve (readiness: send me no traffic).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from cdr_mediation.infra.readiness import Probe, run_probes
from cdr_mediation.observability.msisdn import MsisdnHasher
from cdr_mediation.portal import audit, cdrs, exports, openapi, proofs, verify
from cdr_mediation.portal.adjustments import AdjustmentSettings
from cdr_mediation.portal.adjustments import add_routes as add_adjustment_routes
from cdr_mediation.portal.auth import SUBJECT_OF, SubjectOf, certificate_subject, require_role
from cdr_mediation.portal.db import add_database
from cdr_mediation.portal.errors import json_errors
from cdr_mediation.portal.rollups import add_rollup_routes, parse_worker_urls
from cdr_mediation.portal.tracing import trace_requests

CLIENT_MAX_SIZE = 1024 * 1024  # request bodies; larger is a 413 in the one error shape
if TYPE_CHECKING:
    from cdr_mediation.infra.archive import ObjectLockArchive

REQUESTS = Counter("cdr_portal_requests_total", "Portal HTTP requests", ["route", "status"])
PROBES_KEY = web.AppKey("probes", dict)


@web.middleware
async def count_requests(request: web.Request, handler):
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        REQUESTS.labels(route=route, status=str(exc.status)).inc()
        raise
    REQUESTS.labels(route=route, status=str(response.status)).inc()
    return response


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    results = await run_probes(request.app[PROBES_KEY])
    ready = all(result.ready for result in results)
    body = {
        "ready": ready,
        "checks": {r.name: {"ready": r.ready, **({"detail": r.detail} if r.detail else {})} for r in results},
    }
    return web.json_response(body, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_portal(probes: dict[str, Probe], *, pg_dsn: str | None = None,
                  worker_urls: str | Sequence[str] = (), subject_of: SubjectOf = certificate_subject,
                  archive: ObjectLockArchive | None = None,
                  adjustments: AdjustmentSettings | None = None,
                  msisdn_hasher: MsisdnHasher | None = None) -> web.Application:
    """The API, served over mutual TLS (`portal/tls.py`): every request's role is checked
    (`portal/auth.py`, `domain/access.py`). `pg_dsn` is the one PostgreSQL pool of every
    endpoint (portal/db.py); `worker_urls` (CDR_WORKER_URLS) feed `GET /v1/rollups`
    (rollups.py); `archive` (CDR_S3_*) the export downloads (exports.py); `adjustments`
    (CDR_ADJUSTMENT_ENABLED, the topic) the adjustment writes (adjustments.py). `subject_of` reads
    the caller's certificate subject (unit tests of handlers give a fixed one); `msisdn_hasher` (the
    keyed MSISDN references of the logs) keys the MSISDN in the CDR list's cursors.

    `trace_requests` is outermost, so a request's span covers its role check and its errors;
    `json_errors` is innermost, so that every error — a handler's, the router's 404/405, a body
    over `client_max_size` — is already the one JSON shape when the outer middlewares count it."""
    app = web.Application(middlewares=[trace_requests, count_requests, require_role, json_errors],
                          client_max_size=CLIENT_MAX_SIZE)
    app[PROBES_KEY] = probes
    app[SUBJECT_OF] = subject_of
    database = add_database(app, pg_dsn)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    add_rollup_routes(app, database=database, worker_urls=parse_worker_urls(worker_urls))
    proofs.add_routes(app, database=database)
    # Without the process's keyed hasher (unit tests), a key of this process alone: cursors then
    # do not carry over to another replica, which only a misconfigured deployment would notice.
    cdrs.add_routes(app, hasher=msisdn_hasher or MsisdnHasher(secrets.token_bytes(32)))
    exports.add_routes(app, archive=archive)
    audit.add_routes(app)
    openapi.add_routes(app)
    verify.add_routes(app)  # POST /v1/cdr/chain/verify (verify.py)
    # Without settings (unit tests of other routes) adjustments are refused, never silently sent nowhere.
    add_adjustment_routes(app, adjustments or AdjustmentSettings(enabled=False, topic=""))
    return app


def create_probe_app(probes: dict[str, Probe]) -> web.Application:
    """Liveness, readiness and metrics in clear on the probe port (`CDR_PORTAL_PROBE_PORT`),
    for the kubelet and Prometheus, which present no client certificate. Nothing else is
    served there."""
    app = web.Application(middlewares=[count_requests])
    app[PROBES_KEY] = probes
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
