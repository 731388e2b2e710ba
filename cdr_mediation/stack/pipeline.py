"""A namespaced ingest pipeline on the local stack, for benchmarks and end-to-end tests.

Everything a run creates is isolated by one namespace: its own JetStream stream and subjects,
Kafka topic prefix, Faust app id (consumer group, changelogs), operator ids and pricing. Several
runs can share one stack without seeing each other's data. Processes are real `cdrmed`
processes, started and killed like in production.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from cdr_mediation.infra.nats import DlrInbox, connect, ensure_dlr_stream
from cdr_mediation.stack.process import free_port


def pricing_document(operators: Sequence[str]) -> dict:
    return {
        "format": "cdr-mediation.pricing.v1",
        "version": "pipeline-1",
        "published_at": "2020-01-01T00:00:00Z",
        "operators": {
            op: {"currency": "EUR", "rates": [{"rate_id": f"{op}/default/2020", "effective_from": "2020-01-01T00:00:00Z",
                                              "unit_price_minor": 5 + n, "tax_rate_bp": 2000}]}
            for n, op in enumerate(operators)
        },
    }


def export_config_document(operators: Sequence[str], namespace: str) -> dict:
    """An export configuration for the run's operators. TADIG codes are derived from the
    namespace and the operator's position, so file names of different runs sharing one database
    do not collide (they are unique, as real TADIG codes are)."""
    def tadig(operator_id: str) -> str:
        seed = uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}/{operator_id}").hex
        return "".join(chr(65 + int(c, 16)) for c in seed[:3]) + seed[3:5].upper()

    return {
        "format": "cdr-mediation.export-config.v1",
        "recipient": "ATRAA",
        "test_data": True,
        "operators": {op: {"sender": tadig(op), "time_zone": "+0000", "currency": "EUR",
                           "currency_exponent": 2, "tap_decimal_places": 2}
                      for op in operators},
    }


class LocalPipeline:
    def __init__(self, stack_env: dict[str, str], work_dir: Path, *, operators: int = 4, partitions: int = 4,
                 extra_env: dict[str, str] | None = None) -> None:
        self.namespace = f"n{uuid.uuid4().hex[:8]}"
        self.work_dir = work_dir / self.namespace
        self.work_dir.mkdir(parents=True)
        self.operators = tuple(f"{self.namespace}-op{n}" for n in range(operators))
        pricing = self.work_dir / "pricing.json"
        pricing.write_text(json.dumps(pricing_document(self.operators)))
        export_config = self.work_dir / "export-config.json"
        export_config.write_text(json.dumps(export_config_document(self.operators, self.namespace)))
        self.inbox = DlrInbox(stream=f"DLR_{self.namespace}", subject_root=f"{self.namespace}.dlr.v1")
        self.env = {
            **stack_env,
            "CDR_APP_ID": f"cdr-{self.namespace}",
            "CDR_TOPIC_PREFIX": f"{self.namespace}.",
            "CDR_NATS_STREAM": self.inbox.stream,
            "CDR_NATS_SUBJECT_ROOT": self.inbox.subject_root,
            "CDR_PRICING_FILE": str(pricing),
            "CDR_EXPORT_CONFIG_FILE": str(export_config),
            "CDR_PARTITIONS": str(partitions),
            "CDR_METRICS_PORT": "0",
            **(extra_env or {}),
        }
        self.processes: dict[str, subprocess.Popen] = {}

    def topic(self, name: str) -> str:
        return f"{self.namespace}.{name}"

    def log_path(self, name: str) -> Path:
        return self.work_dir / f"{name}.log"

    def start(self, name: str, command: str, **env: str) -> subprocess.Popen:
        """Start `cdrmed <command>` as process `name` (a worker gets its own data dir and web port)."""
        extra = dict(env)
        if command == "worker":
            extra.setdefault("CDR_DATA_DIR", str(self.work_dir / f"{name}-data"))
            extra.setdefault("CDR_WORKER_WEB_PORT", str(free_port()))
        log = open(self.log_path(name), "ab")
        proc = subprocess.Popen([sys.executable, "-m", "cdr_mediation.cli", command],
                                env={**os.environ, **self.env, **extra}, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        log.close()
        self.processes[name] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL, timeout: float = 60) -> int:
        proc = self.processes[name]
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        return proc.returncode

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.kill(name, signal.SIGTERM)

    async def publish(self, documents: Sequence[bytes], *, msg_ids: Sequence[str | None] | None = None,
                      subjects: Sequence[str] | None = None, rate: float | None = None,
                      trace_parents: Sequence[str | None] | None = None) -> list[float]:
        """Publish raw DLR bytes to JetStream (each acknowledged); returns the publish times.

        Up to `PUBLISH_WINDOW` publishes are in flight, their acks collected on one reply
        subscription: `js.publish` per message (a request with its own future and timer) costs
        ~90 µs of CPU each, and in a benchmark this publisher shares the cores with the
        pipeline it measures. Any negative or missing acknowledgement raises. With `rate`, the
        documents are offered at that many per second (in slices of 1/20 s). `trace_parents` are
        W3C ``traceparent`` headers, as an upstream that traces its DLRs sends them."""
        nc = await connect(self.env["CDR_NATS_URL"], name=f"publisher-{self.namespace}")
        await ensure_dlr_stream(nc.jetstream(), self.inbox)
        acks = _JetStreamAcks()
        reply_root = nc.new_inbox()
        await nc.subscribe(f"{reply_root}.*", cb=acks.on_reply)
        times: list[float] = []
        window = max(1, min(PUBLISH_WINDOW, int(rate / 20))) if rate else PUBLISH_WINDOW
        began = time.monotonic()
        try:
            for start in range(0, len(documents), window):
                end = min(start + window, len(documents))
                if rate and (delay := began + start / rate - time.monotonic()) > 0:
                    await asyncio.sleep(delay)
                acks.expect(end - start)
                for n in range(start, end):
                    document = documents[n]
                    subject = subjects[n] if subjects else self.inbox.subject(_operator_of(document, self.operators[0]))
                    headers = {}
                    if msg_ids and msg_ids[n]:
                        headers["Nats-Msg-Id"] = msg_ids[n]
                    if trace_parents and trace_parents[n]:
                        headers["traceparent"] = trace_parents[n]
                    await nc.publish(subject, document, reply=f"{reply_root}.{n}", headers=headers or None)
                    times.append(time.time())
                await acks.wait(timeout=PUBLISH_ACK_TIMEOUT_S)
        finally:
            await nc.close()
        return times


PUBLISH_WINDOW = 512
PUBLISH_ACK_TIMEOUT_S = 30.0


class _JetStreamAcks:
    """Counts JetStream publish acknowledgements arriving on a reply subscription."""

    def __init__(self) -> None:
        self._pending = 0
        self._done = asyncio.Event()
        self._error: str | None = None

    def expect(self, count: int) -> None:
        self._pending = count
        self._done.clear()

    async def on_reply(self, msg) -> None:
        if not msg.data:  # a status message: no stream took the subject (503) or similar
            status = (msg.headers or {}).get("Status", "?")
            self._error = self._error or f"publish not stored: NATS status {status} for {msg.subject}"
        elif b'"error"' in msg.data:  # a PubAck is {"stream":…,"seq":…}; only errors are parsed
            ack = json.loads(msg.data)
            if "error" in ack:
                self._error = self._error or f"publish refused: {ack['error']}"
        self._pending -= 1
        if self._pending <= 0 or self._error:
            self._done.set()

    async def wait(self, *, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"{self._pending} JetStream acknowledgements missing after {timeout}s") from None
        if self._error:
            raise RuntimeError(self._error)


def _operator_of(document: bytes, fallback: str) -> str:
    try:
        value = json.loads(document)
        return str(value["operator_id"]) if isinstance(value, dict) and "operator_id" in value else fallback
    except (ValueError, UnicodeDecodeError):
        return fallback
