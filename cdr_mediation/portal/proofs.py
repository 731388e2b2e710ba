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

# The portal's one error shape lives with the first route that had it.
from cdr_mediation.portal.rollups import ApiError, bad_request

log = logging.getLogger(__name__)

# Any segment reaches the handler (aiohttp's default pattern excludes braces, which would be an
# HTML 404), so every malformed id gets the JSON 400.
PATH = "/v1/cdrs/{cdr_id:[^/]+}/proof"
PROOF_TIMEOUT_S = 300.0
_CDR_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_UNAVAILABLE_STATUS = {"unknown_cdr": 404}  # every other reason: 409, the file does not hold it yet


def parse_cdr_id(text: str) -> str:
    if not _CDR_ID.fullmatch(text):
        raise bad_request(f"{text[:80]!r} is not a cdr_id: expected a lowercase UUID such as "
                          "4df915ca-f22c-5214-9542-631074267f2a")
    return text


class ProofSource:
    """PostgreSQL, through a small pool opened on the first request."""

    def __init__(self, pg_dsn: str | None) -> None:
        self.pg_dsn = pg_dsn
        self._pool = None
        self._pool_lock = asyncio.Lock()

    async def proof_json(self, cdr_id: str) -> tuple[str, dict]:
        """The proof document and what to log about it (never the entry: it holds an MSISDN)."""
        import asyncpg

        from cdr_mediation.infra.postgres.proof_store import EvidenceMismatch, ProofUnavailable, assemble_proof

        if not self.pg_dsn:
            raise ApiError(503, "not_configured", "no PostgreSQL DSN configured: proofs cannot be read")
        try:
            pool = await self._get_pool()
            async with pool.acquire(timeout=10) as conn:
                proof = await asyncio.wait_for(assemble_proof(conn, cdr_id), PROOF_TIMEOUT_S)
        except ProofUnavailable as exc:
            raise ApiError(_UNAVAILABLE_STATUS.get(exc.reason, 409), exc.reason, str(exc)) from None
        except EvidenceMismatch as exc:
            log.critical("stored evidence disagrees with itself; no proof served", extra={
                "cdr_id": cdr_id, "error": str(exc)})
            raise ApiError(500, "evidence_mismatch", str(exc)) from None
        except (OSError, asyncio.TimeoutError) as exc:
            raise ApiError(503, "database_unavailable", f"PostgreSQL did not answer in time: {exc!r}") from None
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ApiError(503, "database_unavailable", f"PostgreSQL: {exc.__class__.__name__}: {exc}") from None
        context = {"cdr_id": cdr_id, "operator_id": proof.operator_id, "file_name": proof.signed_checkpoint.file_name,
                   "leaf_index": proof.leaf_index, "tree_size": proof.tree_size}
        return proof.to_json(), context

    async def _get_pool(self):
        import asyncpg

        async with self._pool_lock:
            if self._pool is None:
                # min_size=0: the portal starts (and says not ready) while PostgreSQL is down.
                self._pool = await asyncpg.create_pool(self.pg_dsn, min_size=0, max_size=2, timeout=10,
                                                       command_timeout=PROOF_TIMEOUT_S)
            return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


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


def add_routes(app: web.Application, *, pg_dsn: str | None = None) -> None:
    app[SOURCE_KEY] = ProofSource(pg_dsn)

    async def close_source(app: web.Application) -> None:
        await app[SOURCE_KEY].close()

    app.on_cleanup.append(close_source)
    app.router.add_get(PATH, get_proof)
