"""Trace context from the DLR through the CDR to the portal (OpenTelemetry, W3C Trace Context).

The unit that flows is a batch (DESIGN.md §10), so spans are per batch record, not per DLR,
following OpenTelemetry's messaging conventions for batches:

- the bridge opens one PRODUCER span per `dlr.v1` record it sends, *linked* to the context of
  every DLR in it that arrived with a ``traceparent`` NATS header (at most `MAX_LINKS`), and puts
  its own context in the Kafka record's headers;
- the ingest agent opens a CONSUMER span per `dlr.v1` record, child of that context, and puts
  its context in the headers of the `cdr.v1` records and dead letters it emits;
- the CDR-topic agent opens a span per `cdr.v1` record, child of the ingest span, and the store
  keeps the ingest span's ``traceparent`` beside each row (`cdr.trace_parent`);
- the portal opens a SERVER span per request (continuing a caller's ``traceparent``), and a CDR's
  detail page links its span to the stored context and returns it.

Trace context is telemetry, never evidence: it lives in Kafka headers and in a column outside the
hashed entry, so nothing hashed, encoded or signed depends on these random ids, and a replay that
makes new spans changes no record (the store keeps the first delivery's context).

Spans are always made (so context propagates even where nothing is exported); they are exported
over OTLP/HTTP when `CDR_TRACE_OTLP_ENDPOINT` is set, and written as JSON lines when
`CDR_TRACE_FILE` is (the tests read that file).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, SpanContext, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# A span's links are kept in memory until it ends: a bridge batch of 1,000 traced DLRs gets
# the first 128 (OpenTelemetry's own default limit), and says how many it had.
MAX_LINKS = 128
_TRACEPARENT_FORM = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")

_PROPAGATOR = TraceContextTextMapPropagator()
TRACER = trace.get_tracer("cdr_mediation")

def configure_tracing(*, service: str, otlp_endpoint: str = "", trace_file=None,
                      sample_ratio: float = 1.0) -> TracerProvider:
    """Install the process's tracer provider: every process calls this once, at start-up."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": "cdr-mediation", "service.namespace": "cdr-mediation",
                                  "cdr.process": service}),
        # A sampled-out trace still propagates its ids (and the store keeps them); the caller's
        # decision wins where there is one, so one DLR's trace is whole or absent.
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    if trace_file is not None:
        out = open(trace_file, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - lives as long as the process
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(
            out=out, formatter=lambda span: span.to_json(indent=None) + "\n")))
    trace.set_tracer_provider(provider)
    return provider


def headers_of(span: trace.Span | None = None) -> list[tuple[str, bytes]]:
    """Kafka record headers carrying `span`'s context (the current span's when None)."""
    carrier: dict[str, str] = {}
    ctx = trace.set_span_in_context(span) if span is not None else None
    _PROPAGATOR.inject(carrier, context=ctx)
    return [(name, value.encode("ascii")) for name, value in carrier.items()]


def context_of(headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None) -> otel_context.Context:
    """The parent context Kafka or NATS headers carry (an empty context when they carry none or
    a malformed one: bad trace context never costs a record)."""
    items = headers.items() if isinstance(headers, Mapping) else (headers or ())
    carrier = {}
    for name, value in items:
        if name in (TRACEPARENT, TRACESTATE):
            carrier[name] = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    return _PROPAGATOR.extract(carrier) if carrier else otel_context.Context()


def link_to(traceparent: str | bytes | None) -> Link | None:
    """A span link to the context a ``traceparent`` value names; None for absent or malformed."""
    span_context = trace.get_current_span(context_of({TRACEPARENT: traceparent} if traceparent else None)
                                          ).get_span_context()
    return Link(span_context) if span_context.is_valid else None


def links_of(traceparents: Sequence[str | bytes | None]) -> tuple[list[Link], int]:
    """Links to the valid contexts among `traceparents` (at most `MAX_LINKS`), and how many
    valid ones there were."""
    links = [link for link in map(link_to, traceparents) if link is not None]
    return links[:MAX_LINKS], len(links)


def traceparent_of(span_context: SpanContext) -> str | None:
    if not span_context.is_valid:
        return None
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{int(span_context.trace_flags):02x}"


def current_traceparent() -> str | None:
    return traceparent_of(trace.get_current_span().get_span_context())


def valid_traceparent(value: str | bytes | None) -> str | None:
    """`value` if it is a version-00 ``traceparent`` of a valid context, else None."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if value is None or not _TRACEPARENT_FORM.fullmatch(value):
        return None
    return value if link_to(value) is not None else None


def traceparent_in(headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None) -> str | None:
    """The valid ``traceparent`` among Kafka headers, if any."""
    items = headers.items() if isinstance(headers, Mapping) else (headers or ())
    return next((valid_traceparent(value) for name, value in items if name == TRACEPARENT), None)


def consumer_span(message, operator_id: str):
    """The CONSUMER span of processing one Kafka record (a Faust `event.message`), child of the
    context in its headers; use as a context manager (it becomes the current span)."""
    return TRACER.start_as_current_span(
        f"{message.topic} process", context=context_of(message.headers), kind=SpanKind.CONSUMER, attributes={
            "messaging.system": "kafka", "messaging.operation.type": "process",
            "messaging.destination.name": message.topic, "messaging.destination.partition.id": str(message.partition),
            "messaging.kafka.offset": message.offset, "cdr.operator_id": operator_id})
