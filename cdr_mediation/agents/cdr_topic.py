"""The one Faust agent on the CDR topic: the store step, then the rollup step, per record.

One agent, not two: Faust hands a record of a topic with two agents to both and tracks it with a
reference count; when a rebalance clears the agents' queues after one of them has taken the
record, the count never returns to zero, the revocation waits for it forever and the whole
consumer group stops (seen in the rollup chaos test: every member stuck in "Recovery:
Starting..."). A single agent also decodes each record once. Store first: a CDR is in
PostgreSQL before any rollup counts it, and a halted store (chain fork) holds the rollups too.
A worker may run only one of the steps when it is alone in its group (`CDR_WORKER_SOLO`).
"""

from __future__ import annotations

import logging

import faust

from cdr_mediation.agents.ingest import raw_topic
from cdr_mediation.agents.pg_sink import SinkReadiness
from cdr_mediation.codecs.records import UndecodableRecord, decode_cdr_topic_record
from cdr_mediation.domain.adjustment import ChainRefusal
from cdr_mediation.domain.rollup import ClockTick
from cdr_mediation.observability.tracing import consumer_span, traceparent_in
from cdr_mediation.settings import Settings
from cdr_mediation.topology.topics import CDR

log = logging.getLogger(__name__)


def register(app: faust.App, settings: Settings, readiness: SinkReadiness) -> None:
    from cdr_mediation.agents.rollup import RollupApply
    from cdr_mediation.agents.store import StoreStep

    store = StoreStep(settings, readiness) if "store" in settings.agents else None
    rollup = RollupApply(app, settings) if "rollup" in settings.agents else None

    @app.agent(raw_topic(app, CDR.named(settings.topic_prefix).name), name="cdr")
    async def cdr(stream: faust.StreamT) -> None:
        async for event in stream.events():
            operator_id = (event.key or b"").decode("utf-8", "replace")
            try:
                record = decode_cdr_topic_record(event.value)
            except UndecodableRecord as exc:
                # Only the ingest agent and the clock write this topic: an undecodable record is a bug upstream.
                log.error("undecodable CDR-topic record skipped",
                          extra={"error": str(exc), "operator_id": operator_id, "offset": event.message.offset})
                continue
            message = event.message
            with consumer_span(message, operator_id):
                if isinstance(record, ChainRefusal):
                    if store is not None:
                        await store.refusal(record)
                    if rollup is not None:
                        await rollup(event, operator_id, [])  # nothing to count; the offset moves on
                    continue
                if store is not None and not isinstance(record, ClockTick):
                    # The context that chained these entries (the ingest span's) is kept beside them.
                    await store(record, traceparent_in(message.headers))
                if rollup is not None:
                    await rollup(event, operator_id, record)
