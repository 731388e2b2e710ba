"""Committing to PostgreSQL from an agent: one held connection, the same batch retried until it
commits, and a contradiction treated as a halt, not an error to retry.

Faust commits a source offset only once the agent has moved past the event, so an agent that
does not move past a batch until PostgreSQL committed it loses nothing while the database is
down: the backlog waits in Kafka and readiness reports it. A contradiction (a stored row and an
incoming one claiming the same key with different content) is never retried away: the agent
stops consuming that partition and an alert metric is raised; that needs a human.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import asyncpg
from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

RETRIES = Counter("cdr_pg_sink_retries_total", "Commits retried because PostgreSQL failed", ["sink"])
DB_UP = Gauge("cdr_pg_sink_database_up", "1 when the sink's last PostgreSQL commit succeeded", ["sink"])
HALTS = Counter("cdr_pg_sink_halts_total", "Sinks halted on a contradiction with stored rows (alert)", ["sink"])


class SinkReadiness:
    """What the worker's /readyz reports for its PostgreSQL sinks."""

    def __init__(self) -> None:
        self.database_ok = True
        self.detail = ""


class PostgresSink:
    def __init__(self, name: str, dsn: str, readiness: SinkReadiness, *,
                 contradiction: type[Exception]) -> None:
        self.name, self.dsn, self.readiness, self.contradiction = name, dsn, readiness, contradiction
        self._conn: asyncpg.Connection | None = None
        # One operation at a time on the held connection: the exporter's agent, its follow-up
        # timer and the archiver share one sink, and asyncpg refuses a second operation on a busy
        # connection ("another operation is in progress"); that failure's retry then discarded
        # the connection under the first commit, whose retry met its own recorded step.
        self._lock = asyncio.Lock()

    async def _connection(self) -> asyncpg.Connection:
        # Held across batches: a pool's acquire/release would add a round trip to every batch.
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self.dsn, timeout=5, command_timeout=60)
        return self._conn

    async def close(self) -> None:
        """Close the held connection (for a caller that is done with the sink)."""
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()
        self._conn = None

    def _discard_connection(self) -> None:
        # After a failure the connection's state is unknown: the retry starts on a new one.
        if self._conn is not None and not self._conn.is_closed():
            self._conn.terminate()
        self._conn = None

    async def commit(self, write: Callable[[asyncpg.Connection], Awaitable[int]]) -> int:
        """Run `write` (one atomic commit) until it succeeds; returns its result."""
        delay = 0.2
        while True:
            async with self._lock:  # released while waiting, so other users of the sink go on
                try:
                    result = await write(await self._connection())
                    break
                except self.contradiction as exc:
                    contradiction: Exception | None = exc
                except (OSError, asyncpg.PostgresError, asyncio.TimeoutError, asyncpg.InterfaceError) as exc:
                    contradiction = None
                    RETRIES.labels(sink=self.name).inc()
                    DB_UP.labels(sink=self.name).set(0)
                    self._discard_connection()
                    self.readiness.database_ok = False
                    self.readiness.detail = f"postgres: {type(exc).__name__}: {exc}"
                    log.warning("postgres commit failed; retrying the same batch",
                                extra={"sink": self.name, "error": repr(exc), "retry_in_s": delay})
            if contradiction is not None:
                HALTS.labels(sink=self.name).inc()
                self.readiness.database_ok, self.readiness.detail = False, f"{self.name}: {contradiction}"
                log.critical("stored rows contradicted; sink halted", extra={"sink": self.name,
                                                                            "error": str(contradiction)})
                await asyncio.Event().wait()  # hold the partition without committing past it
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        DB_UP.labels(sink=self.name).set(1)
        self.readiness.database_ok, self.readiness.detail = True, ""
        return result
