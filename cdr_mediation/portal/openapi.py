"""``GET /v1/openapi.json``: the portal's OpenAPI 3.1 document, hand-written beside this module
(`openapi.json`, package data). A unit test holds it valid and equal, operation for operation, to
the routes the portal registers; the contract test (tests/integration/test_portal_contract.py)
holds the running portal to it."""

from __future__ import annotations

import functools
import json
from importlib import resources

from aiohttp import web

PATH = "/v1/openapi.json"


@functools.cache
def document_text() -> str:
    return resources.files("cdr_mediation.portal").joinpath("openapi.json").read_text(encoding="utf-8")


def document() -> dict:
    return json.loads(document_text())


async def get_openapi(request: web.Request) -> web.Response:
    return web.Response(text=document_text(), content_type="application/json", charset="utf-8")


def add_routes(app: web.Application) -> None:
    app.router.add_get(PATH, get_openapi)
