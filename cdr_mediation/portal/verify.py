"""``POST /v1/cdr/chain/verify``: run a verification now and answer its report (issue 7;
docs/verification.md §5). Roles: admin, auditor, regulator (`domain/access.py`).

Body: empty (every operator) or ``application/json`` ``{"operator_id": "<id>"}`` (that one). The
run is the daily job's (`agents/verifier.run_verification`): every chain row and every export
checkpoint recomputed, checkpoint signatures checked against CDR_HSM_CA_CERT, one `chain.verify`
audit row whose actor is the caller's certificate CN, whose role is the caller's role and whose
request id is the answer's `request_id`.

200 ``{"ok", "request_id", "results": [...], "checkpoints": [...]}`` — also when a break was
found (`ok` false: the run succeeded, the data did not). Errors in the portal's one shape:

* 400 ``bad_request`` — not a JSON object, unknown members, an operator_id that is not one;
* 404 ``unknown_operator`` — the system holds nothing of that operator;
* 409 ``verification_running`` — another run (the daily job, another caller) holds the lock: ask
  again later;
* 413 ``body_too_large`` — more than 4 KiB;
* 415 ``unsupported_media_type`` — a body that is not ``application/json``;
* 503 ``not_configured`` / ``database_unavailable``.

A run over every operator reads every stored row: on a large system it takes long (the daily
job's duration, `cdr_chain_verify_runs_total` and the `verification recorded` log line show how
long); callers that need one operator should name it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from aiohttp import web

from cdr_mediation.domain.dlr import PATTERNS
from cdr_mediation.domain.strict_json import StrictJsonError, loads_strict
from cdr_mediation.portal.auth import CALLER
from cdr_mediation.portal.db import DATABASE
from cdr_mediation.portal.errors import ApiError

log = logging.getLogger(__name__)

PATH = "/v1/cdr/chain/verify"
MEMBERS = frozenset({"operator_id"})
MAX_BODY = 4096
_OPERATOR = re.compile(PATTERNS["operator_id"])


def parse_verify_request(content_type: str, body: bytes) -> str | None:
    """The operator asked for, None for all; ApiError 400 / 415 for anything else."""
    if not body.strip():
        return None
    if content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", f"the body must be application/json, not {content_type!r} "
                                                      "(or empty to verify every operator)")
    try:
        document = loads_strict(body)
    except StrictJsonError as exc:
        raise ApiError(400, "bad_request", f"the body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ApiError(400, "bad_request", 'the body must be a JSON object: {"operator_id": "<id>"}')
    unknown = sorted(set(document) - MEMBERS)
    if unknown:
        raise ApiError(400, "bad_request", f"unknown member(s) {', '.join(repr(m[:40]) for m in unknown)}; "
                                           'expected {"operator_id": "<id>"}')
    operator_id = document.get("operator_id")
    if operator_id is None:
        return None
    if not isinstance(operator_id, str) or not _OPERATOR.fullmatch(operator_id):
        raise ApiError(400, "bad_request", f"operator_id {str(operator_id)[:80]!r} is not an operator id "
                                           f"({PATTERNS['operator_id']})")
    return operator_id


class VerificationService:
    """The trust anchors of the checkpoint signatures (`use_trust_anchors`, from CDR_HSM_CA_CERT);
    PostgreSQL is the portal's one pool (`portal/db.py`)."""

    def __init__(self) -> None:
        self.trust_anchors: tuple | None = None

    async def verify(self, database, operator_id: str | None, *, actor: str, role: str, request_id: str) -> dict:
        from cdr_mediation.agents.verifier import VerificationBusy, run_verification
        from cdr_mediation.infra.postgres.verification_store import operator_known

        if not self.trust_anchors:
            raise ApiError(503, "not_configured", "no trust anchor configured (CDR_HSM_CA_CERT): checkpoint "
                                                  "signatures cannot be verified")
        try:
            async with database.connection(what="the verification") as conn:
                if operator_id is not None and not await operator_known(conn, operator_id):
                    raise ApiError(404, "unknown_operator", f"no chain, archived segment or export of {operator_id!r}")
                run = await run_verification(conn, self.trust_anchors, request_id=request_id,
                                             operator_ids=None if operator_id is None else [operator_id],
                                             actor=actor, actor_role=role)
        except VerificationBusy:
            raise ApiError(409, "verification_running", "another verification is running; ask again when it "
                                                        "has finished") from None
        assert run is not None  # only the daily job's `only_if_due_s` returns None
        return run.report(request_id)


SERVICE_KEY = web.AppKey("verification_service", VerificationService)


async def post_verify(request: web.Request) -> web.Response:
    from cdr_mediation.infra.postgres.audit_store import new_request_id

    caller = request[CALLER]
    request_id = new_request_id()
    try:
        operator_id = parse_verify_request(request.content_type, await _body(request))
        report = await request.app[SERVICE_KEY].verify(request.app[DATABASE], operator_id, actor=caller.actor,
                                                       role=caller.role.value, request_id=request_id)
    except ApiError as exc:
        if exc.status >= 500:
            log.warning("verification not run", extra={"code": exc.code, "detail": exc.message,
                                                       "request_id": request_id})
        return exc.response()
    except Exception as exc:  # noqa: BLE001 - one JSON error shape, never an HTML 500
        log.exception("verification failed", extra={"request_id": request_id})
        return ApiError(500, "internal", f"{exc.__class__.__name__}: {exc}").response()
    log.info("verification run on request", extra={"actor": caller.actor, "role": caller.role.value,
                                                   "operator_id": operator_id, "ok": report["ok"],
                                                   "request_id": request_id})
    return web.json_response(report)


async def _body(request: web.Request) -> bytes:
    too_large = ApiError(413, "body_too_large", f"the body exceeds {MAX_BODY} bytes")
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise too_large
    try:
        body = await request.read()  # bounded by the app's client_max_size too
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None
    if len(body) > MAX_BODY:
        raise too_large
    return body


def use_trust_anchors(app: web.Application, ca_cert: Path | None) -> None:
    """Give the route the checkpoints' trust anchor (CDR_HSM_CA_CERT; `cdrmed portal` calls this)."""
    from cdr_mediation.infra.cms_verify import load_trust_anchors

    app[SERVICE_KEY].trust_anchors = load_trust_anchors(ca_cert.read_bytes()) if ca_cert is not None else None


def add_routes(app: web.Application) -> None:
    app[SERVICE_KEY] = VerificationService()
    app.router.add_post(PATH, post_verify)
