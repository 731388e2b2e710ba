"""``GET /v1/cdrs/{cdr_id}/proof``: the inclusion proof of one CDR in its signed export file (issue 7).

200 with the proof document (``cdr-mediation.inclusion-proof.v1``, docs/proofs.md), which
`tools/verify_proof.py` checks offline. Errors in the portal's one shape
``{"error": {"code", "message"}}``:

* 400 ``bad_request`` — the id is not a cdr_id (lowercase 8-4-4-4-12 UUID);
* 404 ``unknown_cdr`` — no stored CDR has this id;
* 409 ``day_not_exported`` / ``after_day_close`` / ``not_signed`` — no signed file holds it (yet):
  its day has not closed, it arrived after its day closed, or the file is not signed yet;
* 500 ``evidence_mismatch`` — the stored evidence disagrees with itself (logged critical: a
  tampered row or a bug; a person must look), ``internal``;
* 503 ``database_unavailable`` / ``not_configured``.

A proof reads and hashes the file's record hashes once: O(log n) memory, but O(n) time — about
5 µs per record here, so close to a minute for a ten-million-record file (docs/proofs.md §6).
`PROOF_TIMEOUT_S` bounds a request; the event loop gets control back after every page of hashes.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

from aiohttp import web

from cdr_mediation.portal.db import PortalDatabase
from cdr_mediation.portal.errors import ApiError
from cdr_mediation.portal.query import bad_request

log = logging.getLogger(__name__)

# Any segment reaches the handler (aiohttp's default pattern excludes braces, which would be an
# HTML 404), so every malformed id gets the JSON 400.
PATH = "/v1/cdrs/{cdr_id:[^/]+}/proof"
PROOF_TIMEOUT_S = 300.0
PROOF_CONCURRENCY = 2
_CDR_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_UNAVAILABLE_STATUS = {"unknown_cdr": 404}  # every other reason: 409, the file does not hold it yet


def parse_cdr_id(text: str) -> str:
    if not _CDR_ID.fullmatch(text):
        raise bad_request(f"{text[:80]!r} is not a cdr_id: expected a lowercase UUID such as "
                          "4df915ca-f22c-5214-9542-631074267f2a")
    return text


class ProofSource:
    """Proofs from PostgreSQL, over the portal's shared pool (portal/db.py).

    At most `PROOF_CONCURRENCY` proofs are assembled at once: each reads and hashes a whole
    file's record hashes, and they must not take every connection of the pool from the short
    list queries of the other endpoints."""

    def __init__(self, database: PortalDatabase) -> None:
        self.database = database
        self._slots = asyncio.Semaphore(PROOF_CONCURRENCY)

    async def proof_json(self, cdr_id: str) -> tuple[str, dict]:
        """The proof document and what to log about it (never the entry: it holds an MSISDN)."""
        from cdr_mediation.infra.postgres import proof_store

        try:
            async with self._slots, self.database.connection(what="proofs") as conn:
                proof = await asyncio.wait_for(proof_store.assemble_proof(conn, cdr_id), PROOF_TIMEOUT_S)
        except proof_store.ProofUnavailable as exc:
            raise ApiError(_UNAVAILABLE_STATUS.get(exc.reason, 409), exc.reason, str(exc)) from None
        except proof_store.EvidenceMismatch as exc:
            log.critical("stored evidence disagrees with itself; no proof served", extra={
                "cdr_id": cdr_id, "error": str(exc)})
            raise ApiError(500, "evidence_mismatch", str(exc)) from None
        context = {"cdr_id": cdr_id, "operator_id": proof.operator_id, "file_name": proof.signed_checkpoint.file_name,
                   "leaf_index": proof.leaf_index, "tree_size": proof.tree_size}
        return proof.to_json(), context


SOURCE_KEY = web.AppKey("proof_source", ProofSource)


async def get_proof(request: web.Request) -> web.Response:
    started = time.perf_counter()
    try:
        cdr_id = parse_cdr_id(request.match_info["cdr_id"])
        body, context = await request.app[SOURCE_KEY].proof_json(cdr_id)
    except ApiError as exc:
        if exc.status >= 500:
            log.warning("proof not served", extra={"code": exc.code, "detail": exc.message})
        return exc.response()
    except Exception as exc:  # noqa: BLE001 - one JSON error shape, never an HTML 500
        log.exception("proof not served")
        return ApiError(500, "internal", f"{exc.__class__.__name__}: {exc}").response()
    log.info("proof served", extra={**context, "seconds": round(time.perf_counter() - started, 3)})
    return web.Response(text=body, content_type="application/json", charset="utf-8")


def add_routes(app: web.Application, *, database: PortalDatabase) -> None:
    app[SOURCE_KEY] = ProofSource(database)
    app.router.add_get(PATH, get_proof)
