"""The regulator simulator's two HTTP APIs (aiohttp).

* The delivery API, the protocol of `infra/delivery/https.py`, reached only through the mutual
  TLS front (`tls_front.py`): PUT /v1/files/{name}, GET /v1/responses[/{name}], GET /v1/health.
* The control API, plain HTTP on 127.0.0.1, for tests: command answers
  (POST/DELETE /control/answers, PUT /control/default) and read receipts (GET /control/receipts).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from cdr_mediation.infra.delivery.errors import InvalidFileName
from cdr_mediation.infra.delivery.files import CHUNK_SIZE, check_file_name, parse_response_name
from cdr_mediation.infra.delivery.https import DIGEST_HEADER, FILES_PATH, RESPONSES_PATH
from cdr_mediation.stack.regulator.script import AnswerRule, Arrival

if TYPE_CHECKING:
    from cdr_mediation.stack.regulator.server import RegulatorServer

_SHA256 = re.compile(r"[0-9a-f]{64}")
_STATUS = {Arrival.NEW: 201, Arrival.REDELIVERY: 200, Arrival.CONFLICT: 409}
APPLY_TO_RECEIVED = "apply_to_received"


def delivery_app(server: "RegulatorServer", client_of: Callable[[int], str | None]) -> web.Application:
    """`client_of(peer port)` names the certificate behind a connection piped by the TLS front."""
    routes = web.RouteTableDef()

    @routes.get("/v1/health")
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "client": request["client"]})

    @routes.put(FILES_PATH + "/{name}")
    async def put_file(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            check_file_name(name, channel="https")
        except InvalidFileName:
            return web.json_response({"error": "invalid_name"}, status=400)
        declared = request.headers.get(DIGEST_HEADER, "")
        if not _SHA256.fullmatch(declared):
            return web.json_response({"error": "missing_digest",
                                      "detail": f"{DIGEST_HEADER}: lowercase hex SHA-256 required"}, status=400)
        # Staged under a hidden name in the inbox itself: the watcher skips it, and linking it
        # under its final name stays on one file system.
        staged = server.inbox / f".https-{uuid.uuid4().hex}.part"
        digest, size = hashlib.sha256(), 0
        try:
            with open(staged, "wb") as handle:
                async for chunk in request.content.iter_chunked(CHUNK_SIZE):
                    digest.update(chunk)
                    size += len(chunk)
                    handle.write(chunk)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        if digest.hexdigest() != declared:
            staged.unlink()
            return web.json_response({"error": "digest_mismatch", "sha256": digest.hexdigest()}, status=400)
        arrival, receipt = server.store_upload(name, staged, declared, size, request["client"])
        body: dict[str, Any] = {"file": name, "sha256": receipt.sha256, "size": receipt.size,
                                "receipt_sequence": receipt.sequence}
        if arrival is Arrival.CONFLICT:
            body["error"] = "conflict"
        return web.json_response(body, status=_STATUS[arrival])

    @routes.get(RESPONSES_PATH)
    async def list_responses(request: web.Request) -> web.Response:
        return web.json_response({"responses": server.responses(request.query.get("file"))})

    @routes.get(RESPONSES_PATH + "/{name}")
    async def get_response(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if parse_response_name(name) is None or not (server.outbox / name).is_file():
            return web.json_response({"error": "not_found"}, status=404)
        return web.Response(body=(server.outbox / name).read_bytes(), content_type="application/octet-stream")

    @web.middleware
    async def through_tls_front(request: web.Request, handler: Any) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        client = client_of(peer[1]) if peer else None
        if client is None:
            return web.json_response({"error": "mutual TLS required"}, status=403)
        request["client"] = client
        return await handler(request)

    app = web.Application(middlewares=[through_tls_front])
    app.add_routes(routes)
    return app


def control_app(server: "RegulatorServer") -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/control/health")
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "receipts": len(server.ledger.receipts())})

    @routes.get("/control/answers")
    async def get_answers(request: web.Request) -> web.Response:
        return web.json_response(server.book.as_json())

    @routes.post("/control/answers")
    async def post_answer(request: web.Request) -> web.Response:
        try:
            command = await request.json()
            rule = AnswerRule.from_json(command, extra_keys=frozenset({APPLY_TO_RECEIVED}))
            apply = command.get(APPLY_TO_RECEIVED, False)
            if not isinstance(apply, bool):
                raise ValueError(f"'{APPLY_TO_RECEIVED}' must be true or false")
        except ValueError as exc:  # also a body that is not JSON
            return web.json_response({"error": str(exc)}, status=400)
        answered = server.add_rule(rule, apply_to_received=apply)
        return web.json_response({"rule": rule.as_json(), "answered": [r.as_json() for r in answered]}, status=201)

    @routes.delete("/control/answers")
    async def clear_answers(request: web.Request) -> web.Response:
        server.clear_rules()
        return web.json_response(server.book.as_json())

    @routes.put("/control/default")
    async def put_default(request: web.Request) -> web.Response:
        try:
            command = await request.json()
            if not isinstance(command, dict):
                raise ValueError("the default answer is a JSON object")
            rule = AnswerRule.from_json({**command, "file": "*"})
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        server.set_default(rule)
        return web.json_response(server.book.as_json())

    @routes.get("/control/receipts")
    async def receipts(request: web.Request) -> web.Response:
        wanted = request.query.get("file")
        return web.json_response({"receipts": [r.as_json() for r in server.ledger.receipts()
                                               if wanted is None or r.file == wanted]})

    app = web.Application()
    app.add_routes(routes)
    return app
