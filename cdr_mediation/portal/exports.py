"""Export files: ``GET /v1/exports`` (files with their current state), ``GET
/v1/exports/{operator_id}/{day}`` (one file, its full lifecycle and what is archived) and
``GET /v1/exports/{operator_id}/{day}/download?part=zip|signature|checkpoint`` (the archived
evidence, streamed from the object-lock archive) — docs/portal.md, docs/export.md.

A download serves the latest generation that was delivered (the last step naming its archive
keys; docs/export.md §4), read from the archive by the version id recorded when it was archived,
and checked as it streams against the SHA-256 the **lifecycle** recorded (the ZIP and signature
digests of the delivery step, the checkpoint's canonical bytes of the build step). The last
chunk is held back until the whole object hashed right: if it does not, the connection is cut
short of its Content-Length, so a client can never take a corrupted file for a complete one; the
failure is logged critical and counted in ``cdr_portal_download_verification_failures_total``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import Counter

from cdr_mediation.domain.checkpoint import Checkpoint
from cdr_mediation.domain.export_archive import ArchivedKind, kind_of
from cdr_mediation.domain.export_lifecycle import ExportEvent, ExportState
from cdr_mediation.infra.archive import ArchiveError, ArchiveUnavailable, ObjectLockArchive
from cdr_mediation.infra.postgres import export_search
from cdr_mediation.infra.postgres.export_store import archived_objects, history
from cdr_mediation.portal import cursor, query
from cdr_mediation.portal.db import DATABASE
from cdr_mediation.portal.errors import ApiError

log = logging.getLogger(__name__)

LIST_PATH = "/v1/exports"
# Any segment reaches the handler: a malformed operator or day is a JSON 400, not the router's 404.
DETAIL_PATH = "/v1/exports/{operator_id:[^/]+}/{day:[^/]+}"
DOWNLOAD_PATH = "/v1/exports/{operator_id:[^/]+}/{day:[^/]+}/download"
LIST_PARAMETERS = ("operator_id", "day", "from_day", "to_day", "state", "limit", "cursor")
ARCHIVE = web.AppKey("export_archive", ObjectLockArchive)

DOWNLOAD_FAILURES = Counter("cdr_portal_download_verification_failures_total",
                            "Downloads cut short because the archived bytes did not hash to the recorded SHA-256",
                            ["part"])


@dataclasses.dataclass(frozen=True)
class Part:
    kind: ArchivedKind
    content_type: str
    suffix: str


PARTS = {
    "zip": Part(ArchivedKind.ZIP, "application/zip", ".zip"),
    "signature": Part(ArchivedKind.SIGNATURE, "application/pkcs7-signature", ".zip.p7s"),
    "checkpoint": Part(ArchivedKind.CHECKPOINT, "application/json", ".checkpoint.json"),
}


# --- parameters ---------------------------------------------------------------------------------


def parse_export_key(request: web.Request) -> tuple[str, dt.date]:
    operator_id = query.operator_id({"operator_id": request.match_info["operator_id"]})
    day = query.day({"day": request.match_info["day"]}, "day")
    return operator_id, day


def _valid_position(after: list) -> bool:
    if len(after) != 2 or not all(isinstance(v, str) for v in after):
        return False
    try:
        query.operator_id({"operator_id": after[0]})
        query.day({"day": after[1]}, "day")
    except ApiError:
        return False
    return True


def parse_list_query(request_query) -> tuple[export_search.ExportFilters, tuple[str, dt.date] | None, int]:
    params = query.checked(request_query, LIST_PARAMETERS)
    state = query.one_of(params, "state", {s.value for s in ExportState})
    filters = export_search.ExportFilters(
        operator_id=query.operator_id(params), day=query.day(params, "day"), from_day=query.day(params, "from_day"),
        to_day=query.day(params, "to_day"), state=None if state is None else ExportState(state))
    if filters.from_day and filters.to_day and filters.from_day >= filters.to_day:
        raise query.bad_request(f"from_day ({filters.from_day}) must be before to_day ({filters.to_day})")
    after = None
    if "cursor" in params:
        operator_id, day = cursor.decode(params["cursor"], "exports", _fingerprint(filters), _valid_position)
        after = (operator_id, dt.date.fromisoformat(day))
    return filters, after, query.limit(params)


def _fingerprint(filters: export_search.ExportFilters) -> dict:
    return {name: None if value is None else str(getattr(value, "value", value))
            for name, value in dataclasses.asdict(filters).items()}


# --- handlers -----------------------------------------------------------------------------------


async def list_exports(request: web.Request) -> web.Response:
    filters, after, limit = parse_list_query(request.query)
    async with request.app[DATABASE].connection(what="exports") as conn:
        rows = await export_search.search_exports(conn, filters, after=after, limit=limit + 1)
    page, more = rows[:limit], len(rows) > limit
    next_cursor = cursor.encode("exports", [page[-1]["operator_id"], page[-1]["day"]], _fingerprint(filters)) \
        if more else None
    return web.json_response({"items": page, "next_cursor": next_cursor})


async def get_export(request: web.Request) -> web.Response:
    operator_id, day = parse_export_key(request)
    query.checked(request.query, ())
    async with request.app[DATABASE].connection(what="exports") as conn:
        async with conn.transaction(isolation="repeatable_read", readonly=True):  # one view of file and history
            summary = await export_search.find_export(conn, operator_id, day)
            if summary is None:
                raise _unknown_export(operator_id, day)
            steps = await history(conn, operator_id, day.isoformat())
            archived = await archived_objects(conn, operator_id, day.isoformat())
    return web.json_response({
        "export": summary,
        "history": [{"step": s.step, "from_state": s.from_state.value, "event": s.event.value,
                     "to_state": s.to_state.value, "actor": s.actor, "at": export_search._utc(s.at),
                     "detail": s.detail} for s in steps],
        "archived": [{"kind": a["kind"], "object_key": a["object_key"], "zip_sha256": a["zip_sha256"].strip(),
                      "sha256": a["sha256"].strip(), "size": a["size"], "version_id": a["version_id"],
                      "retain_until": export_search._utc(a["retain_until"]),
                      "archived_at": export_search._utc(a["archived_at"])} for a in archived],
    })


async def download(request: web.Request) -> web.StreamResponse:
    operator_id, day = parse_export_key(request)
    params = query.checked(request.query, ("part",))
    if "part" not in params:
        raise query.bad_request("missing parameter part: one of zip, signature, checkpoint")
    part = PARTS[query.one_of(params, "part", PARTS)]
    archive = request.app.get(ARCHIVE)
    if archive is None:
        raise ApiError(503, "not_configured", "no archive configured (CDR_S3_*): downloads cannot be served")
    async with request.app[DATABASE].connection(what="exports") as conn:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            summary = await export_search.find_export(conn, operator_id, day)
            if summary is None:
                raise _unknown_export(operator_id, day)
            steps = await history(conn, operator_id, day.isoformat())
            archived = {a["object_key"]: a for a in await archived_objects(conn, operator_id, day.isoformat())}
    target = archived_target(summary["file_name"], ((s.event, s.detail) for s in steps), part.kind)
    if target is None:
        raise ApiError(404, "not_archived", f"{summary['file_name']} ({summary['state']}) has no delivered "
                                            "generation in the archive yet")
    key, expected = target
    stored = archived.get(key)
    if stored is None:
        raise ApiError(404, "not_archived", f"{key} is not archived yet (the exporter retries at every poll)")
    if stored["sha256"].strip() != expected:
        _refused(part, key, f"the archive table records sha256 {stored['sha256'].strip()}, the lifecycle {expected}")
        raise ApiError(500, "evidence_mismatch", f"{key}: the archive and the lifecycle disagree on its SHA-256; "
                                                 "nothing is served (logged)")
    return await _stream(request, archive, part, key, expected, stored["size"], stored["version_id"])


def archived_target(file_name: str, steps: Iterable[tuple[ExportEvent, Mapping[str, Any]]],
                    kind: ArchivedKind) -> tuple[str, str] | None:
    """(archive key, SHA-256 recorded by the lifecycle) of `kind` in the latest delivered
    generation; None if no step named one yet. The digests come from the steps themselves: the
    delivery step's ZIP and signature receipts, the build step's checkpoint."""
    steps = list(steps)
    for event, detail in reversed(steps):
        keys = [k for k in detail.get("archive_keys", ()) if _kind(k, file_name) is not None]
        zip_keys = [k for k in keys if _kind(k, file_name) is ArchivedKind.ZIP]
        if not zip_keys:
            continue  # an answer's step: not a generation
        wanted = next((k for k in keys if _kind(k, file_name) is kind), None)
        if wanted is None:
            return None
        zip_sha256 = zip_keys[0].split("/")[3]
        if kind is ArchivedKind.ZIP:
            return wanted, _recorded(detail.get("sha256", zip_sha256), zip_sha256, wanted)
        if kind is ArchivedKind.SIGNATURE:
            return wanted, _recorded(detail.get("signature", {}).get("sha256"), None, wanted)
        built = next((d for e, d in reversed(steps)
                      if e in (ExportEvent.BUILT, ExportEvent.REBUILT) and d.get("zip_sha256") == zip_sha256), None)
        if built is None or "checkpoint" not in built:
            raise ApiError(500, "evidence_mismatch", f"{wanted}: no build step records the checkpoint of ZIP {zip_sha256}")
        digest = hashlib.sha256(Checkpoint.from_dict(built["checkpoint"]).canonical_bytes()).hexdigest()
        return wanted, digest
    return None


def _kind(key: str, file_name: str) -> ArchivedKind | None:
    try:
        return kind_of(key, file_name)
    except ValueError:
        return None


def _recorded(value: Any, also: str | None, key: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value) or (also and value != also):
        raise ApiError(500, "evidence_mismatch", f"{key}: the lifecycle records no usable SHA-256 for it ({value!r})")
    return value


async def _stream(request: web.Request, archive: ObjectLockArchive, part: Part, key: str, expected: str, size: int,
                  version_id: str | None) -> web.StreamResponse:
    file_name = key.rsplit("/", 1)[-1]
    response = web.StreamResponse(headers={
        "Content-Type": part.content_type,
        "Content-Disposition": f'attachment; filename="{file_name}"',
        "Content-Length": str(size),
        # RFC 9530: the client can check the bytes itself against the same recorded digest.
        "Repr-Digest": f"sha-256=:{base64.b64encode(bytes.fromhex(expected)).decode()}:",
        "Cache-Control": "no-store",
    })
    digest, received, held = hashlib.sha256(), 0, b""
    chunks = archive.read_chunks(key, version_id=version_id)
    try:
        try:
            first = await anext(chunks, b"")
        except ArchiveUnavailable as exc:
            raise ApiError(503, "archive_unavailable", f"the archive did not answer: {exc}") from None
        except ArchiveError as exc:
            raise ApiError(502, "archive_error", f"the archive refused: {exc}") from None
        await response.prepare(request)
        try:
            held = first
            digest.update(first)
            received = len(first)
            async for chunk in chunks:
                digest.update(chunk)
                received += len(chunk)
                if received > size:
                    break
                await response.write(held)  # one chunk behind: the last waits for the verdict
                held = chunk
        except ArchiveError as exc:
            log.error("download cut short: the archive failed mid-stream",
                      extra={"key": key, "error": str(exc), "sent": received - len(held)})
            return _abort(request, response)
        if received != size or digest.hexdigest() != expected:
            _refused(part, key, f"read {received} bytes with sha256 {digest.hexdigest()}; recorded {size} bytes "
                                f"with sha256 {expected}")
            return _abort(request, response)
        await response.write(held)
        await response.write_eof()
        log.info("export part served", extra={"key": key, "bytes": received})
        return response
    finally:
        await chunks.aclose()


def _refused(part: Part, key: str, why: str) -> None:
    DOWNLOAD_FAILURES.labels(part=part.kind.value).inc()
    log.critical("archived export bytes are not the recorded ones; download refused", extra={"key": key, "why": why})


def _abort(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Cut the connection short of the announced Content-Length: every HTTP client reports an
    incomplete body, none sees a complete file."""
    response.force_close()
    if request.transport is not None:
        request.transport.abort()
    return response


def _unknown_export(operator_id: str, day: dt.date) -> ApiError:
    return ApiError(404, "unknown_export", f"no export of {operator_id} for {day.isoformat()}")


def add_routes(app: web.Application, *, archive: ObjectLockArchive | None) -> None:
    if archive is not None:
        app[ARCHIVE] = archive
    app.router.add_get(LIST_PATH, list_exports)
    app.router.add_get(DETAIL_PATH, get_export)
    app.router.add_get(DOWNLOAD_PATH, download)
