"""``POST /v1/adjustments`` and ``GET /v1/adjustments/{adjustment_id}`` (admin; docs/adjustments.md).

A POST asks for a VOID or a CORRECT of one original CDR. It needs an ``Idempotency-Key``
header: the first request under a key is decided and its response stored with it; the same key
with the same body (compared in RFC 8785 form) gets that response again, whatever happened
since; the same key with another body is refused (409 ``idempotency_key_reused``).

The portal checks what it can see in PostgreSQL and answers at once — unknown record (404),
not an original, already voided, voided, another adjustment of the record still on its way
(409) — then records the request, its audit entry and its outbox message in one transaction
(`infra/postgres/adjustment_store.py`) and answers 202 ``accepted``. The ingest agent decides
for good when the request reaches the chain; ``GET`` reports ``applied`` with its chain_seq once
the entry is stored. With ``CDR_ADJUSTMENT_ENABLED=false`` every POST is refused (403
``adjustments_disabled``); reading stays possible.
"""

from __future__ import annotations

import dataclasses
import logging

from aiohttp import web

from cdr_mediation.domain.adjustment import (
    AdjustmentKind,
    AdjustmentRefused,
    RefusalCode,
    adjustment_id_for,
    is_uuid,
    parse_body,
    parse_idempotency_key,
    request_for,
)
from cdr_mediation.portal.auth import CALLER
from cdr_mediation.portal.body import json_object
from cdr_mediation.portal.db import DATABASE
from cdr_mediation.portal.errors import ApiError

log = logging.getLogger(__name__)

PATH = "/v1/adjustments"
STATUS_PATH = "/v1/adjustments/{adjustment_id:[^/]+}"
_STATUS = {
    RefusalCode.INVALID_REQUEST: 400,
    RefusalCode.NO_CHANGE: 400,
    RefusalCode.UNKNOWN_CDR: 404,
}  # every other refusal: 409, the record's state does not allow it


@dataclasses.dataclass(frozen=True)
class AdjustmentSettings:
    enabled: bool  # CDR_ADJUSTMENT_ENABLED
    topic: str  # the adjustment topic the outbox publishes to


SETTINGS_KEY = web.AppKey("adjustments", AdjustmentSettings)


def _refused(exc: AdjustmentRefused) -> ApiError:
    return ApiError(_STATUS.get(exc.code, 409), exc.code.value, exc.message)


async def post_adjustment(request: web.Request) -> web.Response:
    from cdr_mediation.infra.postgres import adjustment_store as store
    from cdr_mediation.infra.postgres.audit_store import new_request_id

    settings = request.app[SETTINGS_KEY]
    try:
        if not settings.enabled:
            raise ApiError(403, "adjustments_disabled",
                           "adjustments are disabled on this system (CDR_ADJUSTMENT_ENABLED=false)")
        try:
            key = parse_idempotency_key(request.headers.get("Idempotency-Key"))
        except AdjustmentRefused as exc:
            raise ApiError(400, "idempotency_key_required", exc.message) from None
        document = await json_object(request)
        try:
            body = parse_body(document)
        except AdjustmentRefused as exc:
            raise _refused(exc) from None
        digest = store.body_sha256(document)
        caller = request[CALLER]
        async with request.app[DATABASE].connection(what="the adjustment") as conn:
            stored = await store.stored_request(conn, key)
            if stored is None:
                versions = await store.record_versions(conn, body.ref_cdr_id)
                try:
                    adjustment = _decide(body, versions, await store.pending_adjustments(conn, body.ref_cdr_id),
                                         adjustment_id_for(key), caller.actor)
                except AdjustmentRefused as exc:
                    raise _refused(exc) from None
                response = {"adjustment_id": adjustment.adjustment_id, "operator_id": adjustment.operator_id,
                            "kind": adjustment.kind.value, "ref_cdr_id": adjustment.ref_cdr_id,
                            "cdr_id": adjustment.cdr_id, "ticket_ref": adjustment.ticket_ref,
                            "actor": adjustment.actor, "status": "accepted"}
                stored = await store.create_adjustment(
                    conn, idempotency_key=key, body_digest=digest, request=adjustment, response=response,
                    request_id=request.headers.get("X-Request-Id") or new_request_id(), actor_role=caller.role.value,
                    topic=settings.topic)
                if stored.body_sha256 == digest:
                    log.info("adjustment accepted", extra={k: response[k] for k in (
                        "adjustment_id", "operator_id", "kind", "ref_cdr_id", "cdr_id")})
        if stored.body_sha256 != digest:
            raise ApiError(409, "idempotency_key_reused",
                           "this Idempotency-Key was used for another request body; use a new key")
        return web.json_response(dict(stored.response), status=202)
    except ApiError as exc:
        return exc.response()


def _decide(body, versions, pending: list[str], adjustment_id: str, actor: str):
    """The portal's checks against what PostgreSQL holds (the ingest agent checks again)."""
    if versions is None:
        raise AdjustmentRefused(RefusalCode.UNKNOWN_CDR, f"no stored CDR {body.ref_cdr_id}")
    if versions.original["record_type"] != "CDR":
        raise AdjustmentRefused(RefusalCode.NOT_AN_ORIGINAL,
                                f"{body.ref_cdr_id} is a {versions.original['record_type']} entry: adjust the "
                                f"original CDR {versions.original['ref_cdr_id']} instead")
    if versions.voided:
        if body.kind is AdjustmentKind.VOID:
            raise AdjustmentRefused(RefusalCode.ALREADY_VOIDED, f"CDR {body.ref_cdr_id} is already voided")
        raise AdjustmentRefused(RefusalCode.VOIDED_RECORD, f"CDR {body.ref_cdr_id} is voided and cannot be corrected")
    if pending:
        raise AdjustmentRefused(RefusalCode.ADJUSTMENT_PENDING,
                                f"adjustment {pending[0]} of CDR {body.ref_cdr_id} is not in the chain yet; "
                                "wait until it is applied")
    current = dict(versions.in_force)
    current_hash = current.pop("record_hash")
    return request_for(body, adjustment_id=adjustment_id, actor=actor, current=current, current_hash=current_hash)


async def get_adjustment(request: web.Request) -> web.Response:
    from cdr_mediation.infra.postgres import adjustment_store as store

    adjustment_id = request.match_info["adjustment_id"]
    try:
        if not is_uuid(adjustment_id):
            raise ApiError(400, "bad_request", f"{adjustment_id[:80]!r} is not an adjustment_id (a lowercase UUID)")
        async with request.app[DATABASE].connection(what="the adjustment") as conn:
            result = await store.adjustment_status(conn, adjustment_id)
        if result is None:
            raise ApiError(404, "unknown_adjustment", f"no adjustment {adjustment_id}")
        return web.json_response(result)
    except ApiError as exc:
        return exc.response()


def add_routes(app: web.Application, settings: AdjustmentSettings) -> None:
    """The routes; they use the portal's one pool (`portal/db.py`)."""
    app[SETTINGS_KEY] = settings
    app.router.add_post(PATH, post_adjustment)
    app.router.add_get(STATUS_PATH, get_adjustment)
