"""Store agent: CDR batch records → PostgreSQL, idempotently, offsets committed after the commit.

Faust commits a source offset only once the agent has moved past the event, so the agent does
not move past a batch until PostgreSQL committed it: while the database is down the agent
retries the same batch with backoff, the backlog waits in Kafka, and readiness reports it. A
`ChainFork` (a stored entry contradicted) is never retried away: the agent stops consuming and
the alert metric is raised; that needs a human.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import faust
from prometheus_client import Counter, Gauge

from cdr_mediation.agents.ingest import raw_topic
from cdr_mediation.codecs.records import UndecodableRecord, decode_cdr_batch
from cdr_mediation.infra.postgres.cdr_store import ChainFork, append_cdrs
from cdr_mediation.settings import Settings
from cdr_mediation.topology.topics import CDR

log = logging.getLogger(__name__)

STORED = Counter("cdr_store_rows_total", "CDR rows committed to PostgreSQL (new rows only)")
REDELIVERED = Counter("cdr_store_rows_already_present_total", "CDR rows delivered again and absorbed")
RETRIES = Counter("cdr_store_retries_total", "Batch commits retried because PostgreSQL failed")
DB_UP = Gauge("cdr_store_database_up", "1 when the last PostgreSQL commit succeeded")
FORKS = Counter("cdr_store_chain_forks_total", "Incoming entries contradicting stored ones (alert)")


class StoreReadiness:
    """What the worker's /readyz reports for the store path."""

    def __init__(self) -> None:
        self.database_ok = True
        self.detail = ""


def register(app: faust.App, settings: Settings, readiness: StoreReadiness) -> None:
    cdr_topic = raw_topic(app, CDR.named(settings.topic_prefix).name)
    dsn = settings.pg_dsn.get_secret_value()
    pool: dict[str, asyncpg.Pool] = {}

    async def connection_pool() -> asyncpg.Pool:
        if "pool" not in pool:
            pool["pool"] = await asyncpg.create_pool(dsn, min_size=1, max_size=4, timeout=5, command_timeout=60)
        return pool["pool"]

    @app.agent(cdr_topic, name="store")
    async def store(stream: faust.StreamT) -> None:
        async for event in stream.events():
            try:
                batch = decode_cdr_batch(event.value)
            except UndecodableRecord as exc:
                # Only the ingest agent writes this topic; an undecodable record is a bug upstream.
                log.error("undecodable CDR record skipped", extra={"error": str(exc), "offset": event.message.offset})
                continue
            delay = 0.2
            while True:
                try:
                    async with (await connection_pool()).acquire() as conn:
                        new_rows = await append_cdrs(conn, batch)
                    break
                except ChainFork as fork:
                    FORKS.inc()
                    readiness.database_ok, readiness.detail = False, f"chain fork: {fork}"
                    log.critical("chain fork: stored entry contradicted; store agent halted", extra={"error": str(fork)})
                    await asyncio.Event().wait()  # hold the partition without committing past it
                except (OSError, asyncpg.PostgresError, asyncio.TimeoutError, asyncpg.InterfaceError) as exc:
                    RETRIES.inc()
                    DB_UP.set(0)
                    readiness.database_ok, readiness.detail = False, f"postgres: {type(exc).__name__}: {exc}"
                    log.warning("postgres commit failed; retrying the same batch",
                                extra={"error": repr(exc), "retry_in_s": delay})
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
            DB_UP.set(1)
            readiness.database_ok, readiness.detail = True, ""
            STORED.inc(new_rows)
            REDELIVERED.inc(len(batch) - new_rows)
