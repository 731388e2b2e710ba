"""Trace context on the real stack: from a DLR's ``traceparent`` to the stored CDR and the portal.

An upstream publishes DLRs to JetStream, some with a W3C ``traceparent`` header. Every process
writes its spans to a JSON-lines file (`CDR_TRACE_FILE`), and the test joins them:

- the bridge's publish span links to each upstream DLR context of its batch;
- the ingest span is the child of the bridge's span (through the Kafka record's headers), the
  CDR-topic span the child of the ingest span, and the stored row keeps the ingest span's
  context beside the entry — the entry and its hash are untouched;
- the portal continues the caller's trace, links its span to the stored context and returns it;
- an admin's adjustment continues the admin's trace through the outbox, the relay and the
  forwarder to the ingest span that chains it.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
from pathlib import Path

import aiohttp
import pytest

from cdr_mediation.domain.synthetic import synthetic_dlrs
from cdr_mediation.stack.pipeline import LocalPipeline
from cdr_mediation.stack.process import free_port
from tests.integration.support.observe import expected_cdr_ids, query_rows, wait_stored
from tests.integration.support.portal import portal_tls
from tests.integration.support.portal_process import RunningPortal
from tests.integration.support.processes import eventually, spawn, stop

DAY = dt.datetime(2026, 10, 26, 9, tzinfo=dt.timezone.utc)
UPSTREAM_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = "00-5bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
ADMIN_CALLER = "00-6bf92f3577b34da6a3ce929d0e0e4736-10f067aa0ba902b7-01"


def _upstream(n: int) -> str:
    return f"00-{UPSTREAM_TRACE}-{n + 1:016x}-01"


def _spans(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _ids(span: dict) -> tuple[str, str]:
    return span["context"]["trace_id"][2:], span["context"]["span_id"][2:]


def _parent(span: dict) -> str | None:
    return span["parent_id"][2:] if span.get("parent_id") else None


async def _call(method: str, url: str, tls: ssl.SSLContext, **kwargs) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, ssl=tls, timeout=aiohttp.ClientTimeout(total=60), **kwargs) as response:
            return response.status, await response.json(content_type=None)


@pytest.mark.slow
async def test_trace_context_runs_from_the_dlr_through_the_cdr_to_the_portal(stack_env, stack, tmp_path):
    run = LocalPipeline(stack_env, tmp_path, operators=1, partitions=1)
    files = {name: run.work_dir / f"{name}.spans.jsonl" for name in ("bridge", "worker", "relay", "portal")}
    relay = None
    try:
        run.start("bridge", "bridge", CDR_TRACE_FILE=str(files["bridge"]))
        worker = run.start("worker", "worker", CDR_WORKER_AGENTS="ingest,store,rollup,rollup-store",
                           CDR_TRACE_FILE=str(files["worker"]))
        relay = spawn(["-m", "cdr_mediation.cli", "outbox", "relay"], log_path=run.work_dir / "relay.log",
                      env={**run.env, "CDR_METRICS_PORT": str(free_port()), "CDR_TRACE_FILE": str(files["relay"])})
        traffic = list(synthetic_dlrs(seed=8, start=DAY, count=12, operators=run.operators, spacing_ms=60_000,
                                      id_prefix=f"{run.namespace}-t"))
        documents = [json.dumps(d).encode() for d in traffic]
        # Every other DLR arrives traced; the others have no context of their own.
        traced = [_upstream(n) if n % 2 == 0 else None for n in range(len(documents))]
        await run.publish(documents, msg_ids=[d["dlr_id"] for d in traffic], trace_parents=traced)
        expected = len(expected_cdr_ids(run, documents))
        await wait_stored(run, expected, timeout=180, what="CDRs stored")

        rows = await query_rows(run, "SELECT cdr_id, trace_parent FROM cdr WHERE operator_id = $1 ORDER BY chain_seq",
                                run.operators[0])
        assert len(rows) == expected and all(row["trace_parent"] for row in rows)

        bridge_spans = [s for s in _spans(files["bridge"]) if s["name"].endswith("dlr.v1 publish")]
        linked = {f"00-{link['context']['trace_id'][2:]}-{link['context']['span_id'][2:]}-01"
                  for span in bridge_spans for link in span.get("links", [])}
        assert linked == {t for t in traced if t}, "the bridge links each upstream DLR context"
        assert sum(s["attributes"]["messaging.batch.message_count"] for s in bridge_spans) == len(documents)

        worker_spans = _spans(files["worker"])
        by_id = {_ids(s)[1]: s for s in worker_spans + bridge_spans}
        for row in rows:
            _, trace_id, span_id, _ = row["trace_parent"].split("-")
            ingest = by_id[span_id]
            assert ingest["name"].endswith("dlr.v1 process") and _ids(ingest)[0] == trace_id
            bridge = by_id[_parent(ingest)]
            assert bridge in bridge_spans and _ids(bridge)[0] == trace_id
            assert any(s["name"].endswith("cdr.v1 process") and _parent(s) == span_id for s in worker_spans)

        # The portal: the caller's trace goes on, linked to the context that chained the entry.
        async with RunningPortal(run.env, run.work_dir / "portal.log",
                                 CDR_TRACE_FILE=str(files["portal"])) as portal:
            regulator, admin = portal_tls(stack_env, "regulator"), portal_tls(stack_env, "admin")
            first = rows[0]
            status, detail = await _call("GET", f"{portal.base}/v1/cdrs/{first['cdr_id']}", regulator,
                                         headers={"traceparent": CALLER})
            assert status == 200 and detail["trace_parent"] == first["trace_parent"]
            [served] = [s for s in _spans(files["portal"]) if s["name"] == "GET /v1/cdrs/{cdr_id}"]
            assert _ids(served)[0] == CALLER.split("-")[1] and _parent(served) == CALLER.split("-")[2]
            assert [(link["context"]["trace_id"][2:], link["context"]["span_id"][2:]) for link in served["links"]] == [
                tuple(first["trace_parent"].split("-")[1:3])]

            # An adjustment continues the admin's trace all the way to the chain.
            status, void = await _call("POST", f"{portal.base}/v1/adjustments", admin,
                                       json={"kind": "VOID", "ref_cdr_id": rows[1]["cdr_id"], "ticket_ref": "OPS-7"},
                                       headers={"Idempotency-Key": f"{run.namespace}-void", "traceparent": ADMIN_CALLER})
            assert status == 202, void
            [posted] = [s for s in _spans(files["portal"]) if s["name"] == "POST /v1/adjustments"]
            assert _ids(posted)[0] == ADMIN_CALLER.split("-")[1]

            async def chained():
                found = await query_rows(run, "SELECT trace_parent FROM cdr WHERE cdr_id = $1", void["cdr_id"])
                return found[0] if found else None

            row = await eventually(chained, timeout=120, what="the VOID stored", log=run.log_path("worker"),
                                   alive=worker)
            _, trace_id, span_id, _ = row["trace_parent"].split("-")
            ingest = {_ids(s)[1]: s for s in _spans(files["worker"])}[span_id]
            assert trace_id == ADMIN_CALLER.split("-")[1] and _parent(ingest) == _ids(posted)[1]
    finally:
        if relay is not None:
            stop(relay)
        run.stop_all()
