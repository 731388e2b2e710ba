"""Rollup step: CDR-topic records → per-operator hourly rollups, closed by the stream.

It runs inside the CDR-topic agent (`agents/cdr_topic.py`), after the store step. A thin shell around `domain.rollup.apply_entries` (rules: docs/rollups.md). Per record, in this
order (DESIGN.md §4.5): apply the record's entries or clock tick to the operator's state, emit
the hours it closed to the rollup-closed topic and the days they complete to the day-closed topic
(`domain.day_close`) and wait for Kafka's acks, then write the new state and wait for that ack
too. A crash anywhere re-runs the record on the old state and emits identical closes, which the
rollup store absorbs by (operator, hour, revision) and the exporter by (operator, day); entries
the state has already applied (chain_seq at or below its head) are skipped by the domain.

An input the domain refuses (a chain discontinuity, an entry of another currency) is never skipped silently and never crashes the worker: the record is logged, counted
(`cdr_rollup_refused_total`, an alert) and leaves the operator's state as it was — so that
operator's hours stop closing until someone looks, while every other operator goes on, and
`cdrmed reconcile` shows the difference.
"""

from __future__ import annotations

import datetime as dt
import logging

import faust
from prometheus_client import Counter, Gauge, Histogram

from cdr_mediation.agents.ingest import raw_topic
from cdr_mediation.codecs.records import encode_day_closed, encode_rollup_closed
from cdr_mediation.domain.day_close import days_closed
from cdr_mediation.domain.rollup import ChainDiscontinuity, ClockTick, InvalidRollupInput, apply_entries
from cdr_mediation.settings import Settings
from cdr_mediation.tables.store_options import rocksdb_options
from cdr_mediation.tables.rollup import ROLLUP_TABLE, RollupTable, RollupTableView
from cdr_mediation.topology.topics import CDR, DAY_CLOSED, ROLLUP_CLOSED
from cdr_mediation.topology.transport import resume_from_table

log = logging.getLogger(__name__)

RECORDS = Counter("cdr_rollup_records_total", "CDR-topic records applied by the rollup agent", ["kind"])
ENTRIES = Counter("cdr_rollup_entries_total", "Chain entries applied to rollups")
DUPLICATES = Counter("cdr_rollup_duplicate_entries_total", "Re-emitted chain entries skipped by the rollup agent")
LATE = Counter("cdr_rollup_late_events_total", "Entries later than the grace (they go to a correction revision)",
               ["operator_id"])
CLOSED = Counter("cdr_rollup_hours_closed_total", "Hourly rollups closed (revision 0) and corrections emitted",
                 ["closed_by"])
DAYS_CLOSED = Counter("cdr_rollup_days_closed_total", "Operator days closed for export", ["closed_by"])
REFUSED = Counter("cdr_rollup_refused_total", "CDR-topic records the rollup agent refused (operator halted)",
                  ["reason"])
WATERMARK = Gauge("cdr_rollup_watermark_seconds", "Event-time watermark per operator (Unix seconds)",
                  ["operator_id"])
RECORD_SECONDS = Histogram("cdr_rollup_record_seconds", "Time to apply one CDR-topic record and emit its closes")


class RollupApply:
    """The rollup step of the CDR-topic agent (`agents/cdr_topic.py`), after the store step."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.closed_topic = raw_topic(app, ROLLUP_CLOSED.named(settings.topic_prefix).name)
        self.day_closed_topic = raw_topic(app, DAY_CLOSED.named(settings.topic_prefix).name)
        table = app.tables.add(RollupTable(app, name=ROLLUP_TABLE.name, default=None, beacon=app.tables.beacon,
                                           partitions=settings.partitions, key_type=str,
                                           options=rocksdb_options(settings)))
        self.view = RollupTableView(table)
        # The store step in the same agent absorbs re-delivered records by key.
        resume_from_table(app, CDR.named(settings.topic_prefix).name, self.view.resume_offset)
        self.grace = dt.timedelta(seconds=settings.rollup_grace_s)

    async def __call__(self, event, operator_id: str, record: list | ClockTick) -> None:
        view = self.view
        with RECORD_SECONDS.time():
            try:
                items = [record] if isinstance(record, ClockTick) else record
                state = view.state(operator_id)
                if event.message.offset <= state.applied_offset:
                    RECORDS.labels(kind="already_applied").inc()
                    return
                step = apply_entries(state, items, self.grace)
            except (InvalidRollupInput, ChainDiscontinuity) as exc:
                reason = "chain_discontinuity" if isinstance(exc, ChainDiscontinuity) else "invalid_input"
                REFUSED.labels(reason=reason).inc()
                log.error("rollup refused a record; the operator's rollups wait", extra={
                    "operator_id": operator_id, "reason": reason, "error": str(exc),
                    "source": f"kafka:{event.message.topic}:{event.message.partition}:{event.message.offset}",
                })
                return
            key = operator_id.encode()
            futures = [await self.closed_topic.send(key=key, value=encode_rollup_closed(closed), force=True)
                       for closed in step.closed]
            days = days_closed(step.closed, state.days_closed)
            futures += [await self.day_closed_topic.send(key=key, value=encode_day_closed(day), force=True)
                        for day in days]
            for future in futures:
                await future
            # Written for every record, re-emitted entries only included: the largest applied_offset
            # of a partition's states is where it resumes (domain/source_position.py).
            await view.write_state(step.new_state.with_applied_offset(event.message.offset), event.message.partition)
        RECORDS.labels(kind="tick" if isinstance(record, ClockTick) else "entries").inc()
        ENTRIES.inc(step.applied)
        if step.duplicates:
            DUPLICATES.inc(step.duplicates)
        if step.late_events:
            LATE.labels(operator_id=operator_id).inc(step.late_events)
        for closed in step.closed:
            CLOSED.labels(closed_by=closed.closed_by).inc()
        for day in days:
            DAYS_CLOSED.labels(closed_by=day.closed_by).inc()
        if step.new_state.watermark:
            WATERMARK.labels(operator_id=operator_id).set(
                dt.datetime.fromisoformat(step.new_state.watermark).timestamp())
