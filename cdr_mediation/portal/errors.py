"""The portal's one error shape: ``{"error": {"code": ..., "message": ...}}`` with an HTTP status."""

from __future__ import annotations

import logging

from aiohttp import web

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> web.Response:
        return web.json_response({"error": {"code": self.code, "message": self.message}}, status=self.status)


# aiohttp's own refusals, in the one shape with a code a client can branch on.
_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 411: "length_required",
               413: "payload_too_large", 414: "uri_too_long", 415: "unsupported_media_type",
               431: "headers_too_large", 500: "internal", 501: "not_implemented", 503: "unavailable"}
# Headers of aiohttp's exception that still apply to the JSON answer (405 names what is allowed).
_KEPT_HEADERS = ("Allow", "Retry-After")


def http_error_response(exc: web.HTTPException) -> web.StreamResponse:
    """aiohttp's HTTPException (its text/plain page) as the one JSON shape; redirects and
    successes pass unchanged."""
    if exc.status < 400:
        return exc
    code = _HTTP_CODES.get(exc.status, "client_error" if exc.status < 500 else "internal")
    message = exc.text if exc.text and exc.text != f"{exc.status}: {exc.reason}" else exc.reason
    if exc.status == 404:
        message = "no such endpoint: see GET /v1/openapi.json"
    elif exc.status == 405:
        message = f"method not allowed here; allowed: {exc.headers.get('Allow', '')}"
    elif exc.status == 413:
        message = f"the request body is too large ({exc.text.strip() if exc.text else exc.reason})"
    response = ApiError(exc.status, code, message).response()
    for name in _KEPT_HEADERS:
        if name in exc.headers:
            response.headers[name] = exc.headers[name]
    return response


@web.middleware
async def json_errors(request: web.Request, handler):
    """Every error leaves the portal in the one shape: an `ApiError` a handler raised, an
    aiohttp refusal (unknown route, wrong method, body too large), or a failure nobody expected
    (logged with its traceback; the client gets a 500 ``internal`` without internals)."""
    try:
        return await handler(request)
    except ApiError as exc:
        if exc.status >= 500:
            log.warning("request not served", extra={"code": exc.code, "detail": exc.message,
                                                      "route": _route(request)})
        return exc.response()
    except web.HTTPException as exc:
        return http_error_response(exc)
    except Exception:  # noqa: BLE001 - one JSON error shape, never an HTML 500
        log.exception("request failed", extra={"route": _route(request)})
        return ApiError(500, "internal", "the portal failed to answer; the failure is logged").response()


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"
