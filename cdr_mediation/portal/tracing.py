"""A SERVER span per API request, continuing the caller's W3C ``traceparent`` (docs/tracing.md).

Not OpenTelemetry's aiohttp-server instrumentation: it records the full URL, query string
included, as a span attribute, and ``GET /v1/cdrs?msisdn=…`` would then export a subscriber's
number to the tracing backend. Here a span names the route pattern only (``/v1/cdrs/{cdr_id}``),
never the concrete path or the query.
"""

from __future__ import annotations

from aiohttp import web
from opentelemetry.trace import Status, StatusCode

from cdr_mediation.observability.tracing import TRACER, SpanKind, context_of


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def trace_requests(request: web.Request, handler):
    route = _route(request)
    with TRACER.start_as_current_span(
            f"{request.method} {route}", context=context_of(request.headers), kind=SpanKind.SERVER,
            record_exception=False, set_status_on_exception=False,
            attributes={"http.request.method": request.method, "http.route": route,
                        "url.scheme": request.scheme}) as span:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            span.set_attribute("http.response.status_code", exc.status)
            raise
        except Exception as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
            raise
        span.set_attribute("http.response.status_code", response.status)
        if response.status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        return response
