"""Reading a JSON request body for the portal's writes: every way a body can be wrong is a 4xx
in the one error shape — 415 ``unsupported_media_type`` (not application/json), 413
``payload_too_large`` (over the application's ``client_max_size``, raised by aiohttp while
reading and turned into the shape by `errors.json_errors`), 400 ``bad_request`` (not UTF-8, not
JSON, duplicate member names, not an object)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from cdr_mediation.portal.errors import ApiError


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"member {key!r} appears more than once")
        seen[key] = value
    return seen


async def json_object(request: web.Request, *, optional: bool = False) -> dict[str, Any] | None:
    """The body as a JSON object; None if `optional` and there is no body at all."""
    if optional and not request.body_exists:
        return None
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type",
                       f"the body must be application/json, not {request.content_type or 'unspecified'}")
    raw = await request.read()  # HTTPRequestEntityTooLarge beyond client_max_size
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise ApiError(400, "bad_request", "the body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, "bad_request", f"the body is not JSON: {exc.msg} at line {exc.lineno} column "
                                           f"{exc.colno}") from None
    except ValueError as exc:
        raise ApiError(400, "bad_request", f"the body is not acceptable JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "bad_request", f"the body must be a JSON object, not {type(value).__name__}")
    return value
