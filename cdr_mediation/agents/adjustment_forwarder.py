"""Adjustment forwarder: adjustment topic → the DLR topic partition of the request's operator.

Adjustments are chain entries, so they must take their place in the one ordered log the ingest
agent reads per operator (domain/ingest.py): a replay of the DLR topic then puts them at the same
chain_seq again, and one ``applied_offset`` guards DLR batches and adjustments alike. The portal
writes a request to the outbox in the transaction that records it; the outbox relay publishes
it to the adjustment topic (keyed by operator); this agent copies it, bytes unchanged, into the
DLR topic under the same key and only then lets its offset be committed. A crash in between
forwards it twice; the ingest agent recognises the second copy by its adjustment_id
(`applied_adjustment_key`) and drops it.

It runs in the workers that run the ingest agent, unless `CDR_ADJUSTMENT_ENABLED=false`: then
requests wait in the adjustment topic until adjustments are enabled again.
"""

from __future__ import annotations

import faust
from prometheus_client import Counter

from cdr_mediation.topology.topics import ADJUSTMENT

FORWARDED = Counter("cdr_adjustments_forwarded_total", "Adjustment requests copied into the DLR log")


def register(app: faust.App, settings, dlr_topic: faust.TopicT, raw_topic) -> None:
    adjustment_topic = raw_topic(app, ADJUSTMENT.named(settings.topic_prefix).name)

    @app.agent(adjustment_topic, name="adjustment-forwarder")
    async def forward(stream: faust.StreamT) -> None:
        async for event in stream.events():
            # Awaited before the next event: the offset is committed only after Kafka has it.
            # Headers too: they carry the trace context of the admin's request (and the outbox id).
            future = await dlr_topic.send(key=event.key, value=event.value, headers=event.message.headers, force=True)
            await future
            FORWARDED.inc()
