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
from cdr_mediation.codecs.records import UndecodableRecord, decode_cdr_entries
from cdr_mediation.infra.postgres.cdr_store import ChainFork, append_entries
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
    held: dict[str, asyncpg.Connection] = {}

    async def connection() -> asyncpg.Connection:
        """One connection for the agent (it commits one batch at a time). Kept across batches:
        a pool's acquire/release would add a reset round trip to every batch."""
        conn = held.get("conn")
        if conn is None or conn.is_closed():
            conn = held["conn"] = await asyncpg.connect(dsn, timeout=5, command_timeout=60)
        return conn

    def discard_connection() -> None:
        """After a failure the connection's state is unknown: the retry starts on a new one."""
        conn = held.pop("conn", None)
        if conn is not None and not conn.is_closed():
            conn.terminate()

    @app.agent(cdr_topic, name="store")
    async def store(stream: faust.StreamT) -> None:
        async for event in stream.events():
            try:
                # Entries go to columns as decoded: no `Cdr` objects on this path.
                batch = decode_cdr_entries(event.value)
            except UndecodableRecord as exc:
                # Only the ingest agent writes this topic; an undecodable record is a bug upstream.
                log.error("undecodable CDR record skipped", extra={"error": str(exc), "offset": event.message.offset})
                continue
            delay = 0.2
            while True:
                try:
                    new_rows = await append_entries(await connection(), batch)
                    break
                except ChainFork as fork:
                    FORKS.inc()
                    readiness.database_ok, readiness.detail = False, f"chain fork: {fork}"
                    log.critical("chain fork: stored entry contradicted; store agent halted", extra={"error": str(fork)})
                    await asyncio.Event().wait()  # hold the partition without committing past it
                except (OSError, asyncpg.PostgresError, asyncio.TimeoutError, asyncpg.InterfaceError) as exc:
                    RETRIES.inc()
                    DB_UP.set(0)
                    discard_connection()
                    readiness.database_ok, readiness.detail = False, f"postgres: {type(exc).__name__}: {exc}"
                    log.warning("postgres commit failed; retrying the same batch",
                                extra={"error": repr(exc), "retry_in_s": delay})
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
            DB_UP.set(1)
            readiness.database_ok, readiness.detail = True, ""
            STORED.inc(new_rows)
            REDELIVERED.inc(len(batch) - new_rows)
