"""Trace context across the pipeline's hops (observability/tracing.py), and the portal's spans.

The spans of these tests go to an in-memory exporter installed as the process's tracer
provider (`spans` fixture); `configure_tracing` itself is run in a child process, as every
`cdrmed` process runs it, so this test process's global provider is set only once."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cdr_mediation.domain.bridging import InboundMessage, plan_forwarding
from cdr_mediation.observability.jsonlog import configure_logging
from cdr_mediation.observability.msisdn import MsisdnHasher
from cdr_mediation.observability.tracing import (
    MAX_LINKS,
    TRACER,
    context_of,
    headers_of,
    links_of,
    traceparent_in,
    traceparent_of,
    valid_traceparent,
)
from cdr_mediation.portal.tracing import trace_requests

UPSTREAM = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    return _EXPORTER


def test_a_context_put_in_kafka_headers_is_the_parent_on_the_far_side(spans) -> None:
    with TRACER.start_as_current_span("bridge publish") as producer:
        headers = headers_of(producer)
    assert [name for name, _ in headers] == ["traceparent"]
    assert headers[0][1].decode() == traceparent_of(producer.get_span_context())
    with TRACER.start_as_current_span("ingest process", context=context_of(headers)) as consumer:
        pass
    assert consumer.get_span_context().trace_id == producer.get_span_context().trace_id
    assert consumer.parent.span_id == producer.get_span_context().span_id
    assert traceparent_in(headers) == headers[0][1].decode()
    assert traceparent_in({"traceparent": headers[0][1]}) == headers[0][1].decode()


@pytest.mark.parametrize("bad", [
    b"garbage", b"00-00000000000000000000000000000000-b7ad6b7169203331-01",  # all-zero trace id
    b"00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",  # upper case
    b"00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # all-zero span id
])
def test_malformed_context_starts_a_new_trace_instead_of_failing_the_record(spans, bad) -> None:
    with TRACER.start_as_current_span("ingest process", context=context_of([("traceparent", bad)])) as span:
        pass
    assert span.parent is None and span.get_span_context().is_valid
    assert valid_traceparent(bad) is None and traceparent_in([("traceparent", bad)]) is None
    assert link_count([bad]) == 0


def link_count(values) -> int:
    return links_of(values)[1]


def test_links_keep_the_first_valid_contexts_up_to_the_cap_and_count_them_all() -> None:
    valid = [f"00-{n + 1:032x}-{n + 1:016x}-01" for n in range(MAX_LINKS + 5)]
    links, traced = links_of([None, "junk", *valid])
    assert traced == MAX_LINKS + 5
    assert len(links) == MAX_LINKS
    assert traceparent_of(links[0].context) == valid[0]


def test_the_bridge_plan_carries_each_batchs_upstream_contexts_in_order() -> None:
    def message(seq: int, operator_id: str, trace_parent: str | None) -> InboundMessage:
        return InboundMessage(f"dlr.{operator_id}", b'{"n": %d}' % seq, seq, trace_parent)

    other = "00-1af7651916cd43dd8448eb211c80319c-c7ad6b7169203331-00"
    plan = plan_forwarding([message(1, "op-a", UPSTREAM), message(2, "op-b", None), message(3, "op-a", None),
                            message(4, "op-a", other)], subject_root="dlr", max_batch_dlrs=2)
    assert [operator for operator, _ in plan.batches] == ["op-a", "op-a", "op-b"]
    assert plan.batch_trace_parents == ((UPSTREAM,), (other,), ())


def test_a_log_line_inside_a_span_names_its_trace(spans) -> None:
    stream = io.StringIO()
    configure_logging(service="test", level="INFO", hasher=MsisdnHasher(b"k" * 32), stream=stream)
    try:
        with TRACER.start_as_current_span("work") as span:
            logging.getLogger("cdr_mediation.test").info("inside")
        logging.getLogger("cdr_mediation.test").info("outside")
    finally:
        logging.getLogger().handlers.clear()
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert inside["span_id"] == f"{span.get_span_context().span_id:016x}"
    assert "trace_id" not in outside


async def test_the_portal_continues_the_callers_trace_and_never_records_the_query(spans) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application(middlewares=[trace_requests])
    app.router.add_get("/v1/cdrs/{cdr_id}", handler)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/v1/cdrs/abc", params={"msisdn": "+447700900123"},
                                    headers={"traceparent": UPSTREAM})
        assert response.status == 200
        missing = await client.get("/nowhere?msisdn=%2B447700900123")
        assert missing.status == 404
    first, second = spans.get_finished_spans()
    assert first.name == "GET /v1/cdrs/{cdr_id}" and first.kind == trace.SpanKind.SERVER
    assert f"{first.context.trace_id:032x}" == UPSTREAM.split("-")[1]
    assert f"{first.parent.span_id:016x}" == UPSTREAM.split("-")[2]
    assert first.attributes["http.response.status_code"] == 200
    assert second.attributes["http.response.status_code"] == 404 and second.parent is None
    exported = "".join(span.to_json() for span in (first, second))
    assert "447700900123" not in exported and "/v1/cdrs/abc" not in exported


def test_a_process_writes_its_spans_as_json_lines_and_sampling_keeps_propagation(tmp_path) -> None:
    script = """
import sys
from cdr_mediation.observability.tracing import TRACER, configure_tracing, headers_of
configure_tracing(service="probe", trace_file=sys.argv[1], sample_ratio=float(sys.argv[2]))
with TRACER.start_as_current_span("probe work") as span:
    print(headers_of(span)[0][1].decode())
"""
    recorded, dropped = tmp_path / "recorded.jsonl", tmp_path / "dropped.jsonl"
    outputs = [subprocess.run([sys.executable, "-c", script, str(path), ratio], capture_output=True, text=True,
                              check=True, timeout=60).stdout.strip()
               for path, ratio in ((recorded, "1.0"), (dropped, "0.0"))]
    (line,) = recorded.read_text().splitlines()
    span = json.loads(line)
    assert span["name"] == "probe work" and span["resource"]["attributes"]["cdr.process"] == "probe"
    assert outputs[0][:-3] == f"00-{span['context']['trace_id'][2:]}-{span['context']['span_id'][2:]}"
    assert int(outputs[0][-2:], 16) & 1  # sampled
    # Sampled out: nothing recorded, yet the context still travels (flags 00) for the next hop.
    assert not dropped.exists() or dropped.read_text() == ""
    assert valid_traceparent(outputs[1]) is not None and not int(outputs[1][-2:], 16) & 1
