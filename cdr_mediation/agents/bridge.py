"""The bridge: NATS JetStream (durable pull consumer) → Kafka `dlr.v1`, keyed by operator.

A JetStream message is acknowledged only after Kafka acknowledged (acks=all) the batch record
or dead letter that carries it. When Kafka cannot take a fetched batch, the bridge retries that
same batch (telling JetStream the messages are in progress) instead of fetching more: moving on
would let later DLRs of an operator overtake earlier ones. A crash between the Kafka ack and the
JetStream ack leads to redelivery; the ingest agent's dedup absorbs it.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client import Counter, Gauge

from cdr_mediation.codecs.records import DeadLetterRecord, encode_dlr_batch
from cdr_mediation.domain.bridging import InboundMessage, plan_forwarding
from cdr_mediation.infra.jetstream_pull import PullBatches, PullError
from cdr_mediation.infra.nats import DlrInbox, connect, ensure_dlr_stream, ensure_pull_consumer
from cdr_mediation.observability.tracing import TRACEPARENT, TRACER, SpanKind, headers_of, links_of
from cdr_mediation.settings import Settings
from cdr_mediation.topology.topics import DLR, DLR_DEAD_LETTER

log = logging.getLogger(__name__)

FORWARDED = Counter("cdr_bridge_dlrs_forwarded_total", "DLRs forwarded to Kafka (acked by Kafka)")
DEAD_LETTERED = Counter("cdr_bridge_dead_letters_total", "Messages sent to the dead-letter topic", ["reason"])
IN_FLIGHT = Gauge("cdr_bridge_in_flight_messages", "JetStream messages fetched and not yet acked")
PENDING = Gauge("cdr_bridge_jetstream_pending_messages", "Messages in the stream not yet delivered to the bridge")
PULL_ERRORS = Counter("cdr_bridge_pull_errors_total", "JetStream pull requests ended by an error status")
KAFKA_RETRIES = Counter("cdr_bridge_kafka_retries_total", "Batches retried because Kafka did not acknowledge")

DURABLE = "cdr-bridge"


class Bridge:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.inbox = DlrInbox(settings.nats_stream, settings.nats_subject_root)
        self.dlr_topic = DLR.named(settings.topic_prefix).name
        self.dlq_topic = DLR_DEAD_LETTER.named(settings.topic_prefix).name

    async def run(self, stop: asyncio.Event) -> None:
        nc = await connect(self.settings.nats_url, name="cdr-bridge")
        js = nc.jetstream()
        await ensure_dlr_stream(js, self.inbox)
        await ensure_pull_consumer(js, self.inbox.stream, ConsumerConfig(
            durable_name=DURABLE, filter_subject=self.inbox.wildcard, ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL, ack_wait=self.settings.bridge_ack_wait_s,
            max_ack_pending=self.settings.bridge_max_batch * 4))
        puller = PullBatches(nc, self.inbox.stream, DURABLE, max_batch=self.settings.bridge_max_batch)
        await puller.start()
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap, acks="all", enable_idempotence=False,
            linger_ms=5, max_batch_size=1024 * 1024, max_request_size=4 * 1024 * 1024,
            request_timeout_ms=30000,
        )
        await producer.start()
        pending_task = asyncio.create_task(self._watch_pending(js, stop))
        log.info("bridge running", extra={"durable": DURABLE, "dlr_topic": self.dlr_topic})
        try:
            while not stop.is_set():
                # Wait up to 1 s for a first message, then gather more for up to the linger:
                # JetStream hands out what is available, often one message, and the unit that
                # flows through Kafka and Faust should be a batch (DESIGN.md §10).
                try:
                    messages = await puller.gather(wait_s=1.0, linger_s=self.settings.bridge_linger_ms / 1000)
                except PullError as exc:  # e.g. JetStream unavailable for a moment: ask again
                    PULL_ERRORS.inc()
                    log.warning("jetstream pull failed; pulling again", extra={"error": str(exc)})
                    await asyncio.sleep(1.0)
                    continue
                if not messages:
                    continue
                # The batch in hand is finished even when a stop arrives meanwhile (drain).
                await self._forward(producer, messages)
        finally:
            pending_task.cancel()
            await puller.stop()
            await producer.stop()
            try:
                await nc.drain()
            except Exception as exc:  # noqa: BLE001 - everything acked is already safe; just close
                log.warning("nats drain failed; closing", extra={"error": repr(exc)})
                await nc.close()
            log.info("bridge stopped")

    async def _forward(self, producer: AIOKafkaProducer, messages) -> None:
        IN_FLIGHT.set(len(messages))
        plan = plan_forwarding([InboundMessage(m.subject, m.data, m.metadata.sequence.stream,
                                               (m.headers or {}).get(TRACEPARENT)) for m in messages],
                               subject_root=self.inbox.subject_root)
        spans = [self._publish_span(operator, batch, trace_parents)
                 for (operator, batch), trace_parents in zip(plan.batches, plan.batch_trace_parents)]
        delay = 0.2
        while True:
            try:
                futures = [
                    await producer.send(self.dlr_topic, key=operator.encode(), value=encode_dlr_batch(batch),
                                        headers=headers_of(span))
                    for (operator, batch), span in zip(plan.batches, spans)
                ]
                for rejected in plan.rejected:
                    record = DeadLetterRecord(
                        key=rejected.operator_key, original=rejected.message.data, reason=rejected.reason,
                        detail=rejected.detail, stage="bridge",
                        source=f"jetstream:{self.inbox.stream}:{rejected.message.stream_seq}:{rejected.message.subject}",
                    )
                    futures.append(await producer.send(self.dlq_topic, key=record.key.encode(),
                                                       value=record.original, headers=record.headers()))
                await asyncio.gather(*futures)
                break
            except Exception as exc:  # noqa: BLE001 - Kafka errors of every kind: same batch again
                KAFKA_RETRIES.inc()
                log.warning("kafka did not acknowledge; retrying the same batch",
                            extra={"error": repr(exc), "retry_in_s": delay})
                for message in messages:
                    await message.in_progress()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        for message in messages:
            await message.ack()
        for span in spans:
            span.end()
        FORWARDED.inc(sum(len(batch) for _, batch in plan.batches))
        for rejected in plan.rejected:
            DEAD_LETTERED.labels(reason=rejected.reason).inc()
            log.warning("dead letter", extra={"reason": rejected.reason, "detail": rejected.detail,
                                              "stream_seq": rejected.message.stream_seq})
        IN_FLIGHT.set(0)

    def _publish_span(self, operator_id: str, batch, trace_parents):
        links, traced = links_of(trace_parents)
        return TRACER.start_span(f"{self.dlr_topic} publish", kind=SpanKind.PRODUCER, links=links, attributes={
            "messaging.system": "kafka", "messaging.operation.type": "send",
            "messaging.destination.name": self.dlr_topic, "messaging.batch.message_count": len(batch),
            "cdr.operator_id": operator_id, "cdr.traced_dlrs": traced})

    async def _watch_pending(self, js, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                info = await js.consumer_info(self.inbox.stream, DURABLE)
                PENDING.set(info.num_pending)
            except Exception as exc:  # noqa: BLE001 - a metric, never fatal
                log.debug("consumer_info failed", extra={"error": repr(exc)})
            await asyncio.sleep(5)
