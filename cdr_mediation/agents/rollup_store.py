"""Rollup store agent: rollup-closed records → PostgreSQL `rollup_closed`, idempotently.

A close re-emitted after a crash carries identical values and is absorbed; one that contradicts
a stored close (same operator, hour and revision, other values) halts the sink (`pg_sink.py`).
"""

from __future__ import annotations

import logging

import faust
from prometheus_client import Counter

from cdr_mediation.agents.ingest import raw_topic
from cdr_mediation.agents.pg_sink import PostgresSink, SinkReadiness
from cdr_mediation.codecs.records import UndecodableRecord, decode_rollup_closed
from cdr_mediation.infra.postgres.rollup_store import RollupConflict, append_closes
from cdr_mediation.settings import Settings
from cdr_mediation.topology.topics import ROLLUP_CLOSED

log = logging.getLogger(__name__)

STORED = Counter("cdr_rollup_closes_stored_total", "Rollup closes committed to PostgreSQL (new rows only)")


def register(app: faust.App, settings: Settings, readiness: SinkReadiness) -> None:
    closed_topic = raw_topic(app, ROLLUP_CLOSED.named(settings.topic_prefix).name)
    sink = PostgresSink("rollup_closed", settings.pg_dsn.get_secret_value(), readiness, contradiction=RollupConflict)

    @app.agent(closed_topic, name="rollup-store")
    async def rollup_store(stream: faust.StreamT) -> None:
        async for event in stream.events():
            try:
                closed = decode_rollup_closed(event.value)
            except UndecodableRecord as exc:
                log.error("undecodable rollup-closed record skipped",
                          extra={"error": str(exc), "offset": event.message.offset})
                continue
            STORED.inc(await sink.commit(lambda conn: append_closes(conn, [closed])))
