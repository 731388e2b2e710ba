"""Store agent: CDR batch records → PostgreSQL, idempotently, offsets committed after the commit.

The commit discipline (retry the same batch while PostgreSQL is down, halt on a `ChainFork`) is
`agents/pg_sink.py`. Clock ticks, the CDR topic's other record kind, are for the rollup agent.
"""

from __future__ import annotations

import logging

import faust
from prometheus_client import Counter

from cdr_mediation.agents.ingest import raw_topic
from cdr_mediation.agents.pg_sink import PostgresSink, SinkReadiness
from cdr_mediation.codecs.records import UndecodableRecord, decode_cdr_topic_record
from cdr_mediation.domain.rollup import ClockTick
from cdr_mediation.infra.postgres.cdr_store import ChainFork, append_entries
from cdr_mediation.settings import Settings
from cdr_mediation.topology.topics import CDR

log = logging.getLogger(__name__)

STORED = Counter("cdr_store_rows_total", "CDR rows committed to PostgreSQL (new rows only)")
REDELIVERED = Counter("cdr_store_rows_already_present_total", "CDR rows delivered again and absorbed")


def register(app: faust.App, settings: Settings, readiness: SinkReadiness) -> None:
    cdr_topic = raw_topic(app, CDR.named(settings.topic_prefix).name)
    sink = PostgresSink("cdr", settings.pg_dsn.get_secret_value(), readiness, contradiction=ChainFork)

    @app.agent(cdr_topic, name="store")
    async def store(stream: faust.StreamT) -> None:
        async for event in stream.events():
            try:
                # Entries go to columns as decoded: no `Cdr` objects on this path.
                batch = decode_cdr_topic_record(event.value)
            except UndecodableRecord as exc:
                # Only the ingest agent and the clock write this topic: an undecodable record is a bug upstream.
                log.error("undecodable CDR record skipped", extra={"error": str(exc), "offset": event.message.offset})
                continue
            if isinstance(batch, ClockTick):
                continue
            new_rows = await sink.commit(lambda conn: append_entries(conn, batch))
            STORED.inc(new_rows)
            REDELIVERED.inc(len(batch) - new_rows)
