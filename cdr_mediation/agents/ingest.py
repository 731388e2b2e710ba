"""Ingest agent: DLR batch records → chained CDR batch records and dead letters.

A thin shell around the pure step `domain.ingest.apply_batch` (fed in slices through
`BatchStep`, so the worker's event loop stays responsive). Per batch record (DESIGN.md §4.5):
emit CDRs and dead letters, write the dedup entries (locally and to the changelog), wait until Kafka
acknowledged all of them, and only then write the new state to the table. Dedup entries are
inert until a state records their batch (`source_offset <= applied_offset`), so they may be sent
together with the outputs; the state must follow both. A crash anywhere re-runs the batch from
the old state and emits byte-identical records, which the store absorbs by key.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import faust
from prometheus_client import Counter, Histogram

from cdr_mediation.codecs.records import (
    DeadLetterRecord,
    UndecodableRecord,
    decode_adjustment,
    decode_dlr_batch,
    encode_adjustment_entry,
    encode_cdr_records,
    encode_chain_refusal,
    is_adjustment_record,
)
from cdr_mediation.domain.adjustment import AdjustmentRefused
from cdr_mediation.domain.ingest import BatchStep, apply_adjustment
from cdr_mediation.domain.pricing import PricingSnapshot
from cdr_mediation.observability.tracing import consumer_span, headers_of
from cdr_mediation.settings import Settings
from cdr_mediation.tables.store_options import rocksdb_options
from cdr_mediation.tables.ingest import INGEST_TABLE, IngestTable, IngestTableView
from cdr_mediation.topology.topics import CDR, DLR, DLR_DEAD_LETTER
from cdr_mediation.topology.transport import resume_from_table

log = logging.getLogger(__name__)

BATCHES = Counter("cdr_ingest_batches_total", "DLR batch records processed", ["outcome"])
CDRS = Counter("cdr_ingest_cdrs_total", "CDRs appended to operator chains", ["operator_id"])
DUPLICATES = Counter("cdr_ingest_duplicates_total", "Redelivered DLRs dropped by dedup", ["operator_id"])
DEAD_LETTERS = Counter("cdr_ingest_dead_letters_total", "DLRs sent to the dead-letter topic", ["reason"])
BATCH_SECONDS = Histogram("cdr_ingest_batch_seconds", "Time to apply and emit one batch record")
ADJUSTMENTS = Counter("cdr_ingest_adjustments_total", "Adjustment requests reaching the chain",
                      ["kind", "outcome"])

# DLRs applied between two returns to the event loop (~2-3 ms of pure Python here). A whole batch
# record (up to 1,000 DLRs) at once holds the loop for 10-100 ms, and a store agent in the same
# worker waits that long for each of its five PostgreSQL round trips per batch: measured at
# 5,000 DLR/s, stored rows fell seconds behind the chained ones.
STEP_SLICE = 32


def raw_topic(app: faust.App, name: str) -> faust.TopicT:
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


def register(app: faust.App, settings: Settings, pricing: PricingSnapshot) -> None:
    prefix = settings.topic_prefix
    dlr_topic = raw_topic(app, DLR.named(prefix).name)
    cdr_topic = raw_topic(app, CDR.named(prefix).name)
    dlq_topic = raw_topic(app, DLR_DEAD_LETTER.named(prefix).name)
    table = app.tables.add(IngestTable(app, name=INGEST_TABLE.name, default=None, beacon=app.tables.beacon,
                                       partitions=settings.partitions, key_type=str,
                                       options=rocksdb_options(settings)))
    view = IngestTableView(table, app)
    resume_from_table(app, dlr_topic.get_topic_name(), view.resume_offset)
    if settings.adjustment_enabled:
        from cdr_mediation.agents import adjustment_forwarder

        adjustment_forwarder.register(app, settings, dlr_topic, raw_topic)
    else:
        log.warning("adjustment forwarder not started: CDR_ADJUSTMENT_ENABLED=false")

    @app.agent(dlr_topic, name="ingest")
    async def ingest(stream: faust.StreamT) -> None:
        async for event in stream.events():
            operator_id = (event.key or b"").decode("utf-8", "replace")
            offset = event.message.offset
            partition = event.message.partition
            # The span is the child of the bridge's (or, for an adjustment, the admin's) context in
            # the record's headers; its own context goes on everything the record produces.
            with BATCH_SECONDS.time(), consumer_span(event.message, operator_id) as span:
                trace_headers = headers_of(span)
                state = view.state(operator_id)
                if offset <= state.applied_offset:
                    BATCHES.labels(outcome="already_applied").inc()
                    continue
                if is_adjustment_record(event.value):
                    await _adjust(view, state, event, operator_id, cdr_topic, dlq_topic, trace_headers)
                    continue
                try:
                    batch = decode_dlr_batch(event.value)
                except UndecodableRecord as exc:
                    await _send_all([await dlq_topic.send(
                        key=operator_id.encode(), value=event.value, force=True,
                        headers=_dead_letter(operator_id, event.value, "undecodable_batch", str(exc), event, -1).headers()
                        + trace_headers,
                    )])
                    DEAD_LETTERS.labels(reason="undecodable_batch").inc()
                    await view.write_state(operator_id, dataclasses.replace(state, applied_offset=offset), partition)
                    BATCHES.labels(outcome="undecodable").inc()
                    continue
                step = BatchStep(state, offset, pricing, view.dedup_lookup(operator_id, partition))
                for start in range(0, len(batch), STEP_SLICE):
                    if start:
                        await asyncio.sleep(0)  # let the worker's other agents run (see STEP_SLICE)
                    step.feed(batch[start:start + STEP_SLICE])
                outcome = step.outcome()
                futures = []
                if outcome.cdrs:
                    pairs = [(entry, linked.record_hash) for entry, linked in zip(outcome.entries, outcome.cdrs)]
                    for value in encode_cdr_records(pairs):
                        futures.append(await cdr_topic.send(key=operator_id.encode(), value=value, force=True,
                                                            headers=trace_headers))
                for dead in outcome.dead_letters:
                    record = _dead_letter(operator_id, dead.original, dead.reason_code, dead.detail, event, dead.batch_index)
                    futures.append(await dlq_topic.send(key=record.key.encode(), value=record.original,
                                                        headers=record.headers() + trace_headers, force=True))
                futures += await view.write_dedup(operator_id, partition, outcome.dedup_writes)
                await _send_all(futures)
                # The next event waits until this state is acknowledged (see write_state).
                await view.write_state(operator_id, outcome.new_state, partition)
                span.set_attributes({"cdr.chained": len(outcome.cdrs), "cdr.duplicates": outcome.duplicates,
                                     "cdr.dead_letters": len(outcome.dead_letters)})
            BATCHES.labels(outcome="applied").inc()
            CDRS.labels(operator_id=operator_id).inc(len(outcome.cdrs))
            if outcome.duplicates:
                DUPLICATES.labels(operator_id=operator_id).inc(outcome.duplicates)
            for dead in outcome.dead_letters:
                DEAD_LETTERS.labels(reason=dead.reason_code).inc()


async def _adjust(view: IngestTableView, state, event, operator_id: str, cdr_topic, dlq_topic,
                  trace_headers: list[tuple[str, bytes]]) -> None:
    """One adjustment request in the DLR log (`domain.ingest.apply_adjustment`): the same order
    of effects as a batch — emit, write the table entries, wait for both, then the state."""
    offset, partition = event.message.offset, event.message.partition
    try:
        request = decode_adjustment(event.value)
        kind = request.kind.value
    except AdjustmentRefused as exc:
        request, kind = exc, "unknown"
    outcome = apply_adjustment(state, request, event.value, offset, view.lookup(partition))
    futures = []
    if outcome.linked is not None:
        value = encode_adjustment_entry(outcome.entry, outcome.linked.record_hash, dict(outcome.supersedes))
        futures.append(await cdr_topic.send(key=operator_id.encode(), value=value, force=True, headers=trace_headers))
    if outcome.refused is not None:
        dead = outcome.refused
        record = _dead_letter(operator_id, dead.original, dead.reason_code, dead.detail, event, dead.batch_index)
        futures.append(await dlq_topic.send(key=record.key.encode(), value=record.original,
                                            headers=record.headers() + trace_headers, force=True))
    if outcome.chain_refusal is not None:  # the store records it: the request's status says so
        futures.append(await cdr_topic.send(key=operator_id.encode(), value=encode_chain_refusal(outcome.chain_refusal),
                                            force=True, headers=trace_headers))
    futures += await view.write_entries(partition, outcome.table_writes)
    await _send_all(futures)
    await view.write_state(operator_id, outcome.new_state, partition)
    result = "applied" if outcome.linked else "duplicate" if outcome.duplicate else "refused"
    ADJUSTMENTS.labels(kind=kind, outcome=result).inc()
    BATCHES.labels(outcome="adjustment").inc()
    if outcome.linked is not None:
        CDRS.labels(operator_id=operator_id).inc()
    if outcome.refused is not None:
        DEAD_LETTERS.labels(reason=outcome.refused.reason_code).inc()
        log.warning("adjustment refused", extra={"operator_id": operator_id, "reason": outcome.refused.reason_code,
                                                 "detail": outcome.refused.detail, "offset": offset})


async def _send_all(futures) -> None:
    """Wait until Kafka acknowledged every record: outputs and dedup entries (the state may only
    be written after).

    Sends use `force=True`: Faust would otherwise attach them to the current event and send them
    only when the event is acked, after this agent has written its state — the wrong order.
    """
    for future in futures:
        await future


def _dead_letter(operator_id: str, original: bytes, reason: str, detail: str, event, index: int) -> DeadLetterRecord:
    message = event.message
    return DeadLetterRecord(key=operator_id or "unknown", original=original, reason=reason, detail=detail,
                            stage="ingest", source=f"kafka:{message.topic}:{message.partition}:{message.offset}:{index}")
