"""The outbox relay: committed outbox rows → Kafka, in id order, at least once (docs/audit.md §6).

One relay publishes at a time: the active one holds a session advisory lock on its PostgreSQL
connection, and others wait for it as standbys (a relay whose connection dies loses the lock, so
a standby takes over). Each pass reads the oldest unpublished rows, sends them in id order, and
marks as published the rows Kafka acknowledged — the acknowledged prefix only, so a failure in
the middle of a batch never leaves an earlier row behind a later one. A crash between Kafka's
acknowledgement and the mark publishes those rows again on the next pass: every message carries
its row id in the `outbox-id` header, and consumers drop an id they have seen (at-least-once).

Order within a partition holds even without the idempotent producer (`CDR_KAFKA_IDEMPOTENT_PRODUCER`,
off on the local Tansu broker, which lacks InitProducerId): aiokafka keeps one request per broker
in flight and retries a batch before sending the next. The idempotent producer also removes the
duplicates a retried request could leave.

The relay sleeps on PostgreSQL's NOTIFY (sent at commit by the outbox insert trigger) and looks
anyway every `CDR_OUTBOX_POLL_INTERVAL_S`, which covers notifications lost while reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge

from cdr_mediation.infra.postgres.outbox import (
    NOTIFY_CHANNEL,
    RELAY_LOCK_KEY,
    mark_published,
    pending,
    pending_count,
    try_lead,
)
from cdr_mediation.settings import Settings

log = logging.getLogger(__name__)

PENDING = Gauge("cdr_outbox_pending", "Committed outbox messages not yet published to Kafka")
PUBLISHED = Counter("cdr_outbox_published_total", "Outbox messages published to Kafka and marked", ["topic"])
FAILURES = Counter("cdr_outbox_relay_failures_total", "Relay passes that failed", ["kind"])
LEADING = Gauge("cdr_outbox_relay_leading", "1 while this relay is the one publishing")

_MAX_BACKOFF_S = 30.0


class NotLeading(RuntimeError):
    """Another relay is publishing the outbox."""


def make_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                            enable_idempotence=settings.kafka_idempotent_producer, request_timeout_ms=30000)


async def relay_batch(conn, producer: AIOKafkaProducer, *, limit: int) -> int:
    """Publish up to `limit` of the oldest unpublished rows and mark those Kafka acknowledged.

    Returns how many were published; raises the first Kafka failure after marking the
    acknowledged prefix before it."""
    messages = await pending(conn, limit=limit)
    if not messages:
        return 0
    sent, refused = [], None
    for message in messages:
        try:
            sent.append(await producer.send(message.topic, value=message.value, key=message.key,
                                            headers=message.kafka_headers()))
        except KafkaError as exc:  # not even queued (no metadata, too large): nothing after it goes
            refused = exc
            break
    # Every queued send is awaited, also after a failure, so none is left unobserved.
    outcomes = await asyncio.gather(*sent, return_exceptions=True)
    acked, failure = [], None
    for message, outcome in zip(messages, outcomes):
        if isinstance(outcome, BaseException):
            failure = outcome
            break
        acked.append(message)
    failure = failure or refused
    await mark_published(conn, [m.id for m in acked])
    for message in acked:
        PUBLISHED.labels(topic=message.topic).inc()
    if acked:
        log.info("outbox published", extra={"count": len(acked), "first_id": acked[0].id, "last_id": acked[-1].id})
    if failure is not None:
        raise failure
    return len(acked)


class OutboxRelay:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dsn = settings.pg_dsn.get_secret_value()
        self.batch = settings.outbox_batch
        self.poll_interval_s = settings.outbox_poll_interval_s

    async def drain(self) -> int:
        """Publish everything pending now, then return how many were published (`--once`).
        Raises NotLeading if another relay is active."""
        conn = await asyncpg.connect(self.dsn, timeout=10)
        try:
            if not await try_lead(conn):
                raise NotLeading("another outbox relay is active")
            producer = make_producer(self.settings)
            await producer.start()
            try:
                total = 0
                while (count := await relay_batch(conn, producer, limit=self.batch)) > 0:
                    total += count
            finally:
                await producer.stop()
            PENDING.set(await pending_count(conn))
            return total
        finally:
            await _close(conn)

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set: wait to lead, publish as rows commit, reconnect on failure."""
        producer = make_producer(self.settings)
        await producer.start()
        delay = 0.5
        try:
            while not stop.is_set():
                try:
                    await self._lead_and_relay(producer, stop)
                    delay = 0.5
                except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    FAILURES.labels(kind="postgres").inc()
                    log.warning("outbox relay lost PostgreSQL; reconnecting",
                                extra={"error": repr(exc), "retry_in_s": delay})
                    await _wait(stop, delay)
                    delay = min(delay * 2, _MAX_BACKOFF_S)
        finally:
            LEADING.set(0)
            await producer.stop()

    async def _lead_and_relay(self, producer: AIOKafkaProducer, stop: asyncio.Event) -> None:
        conn = await asyncpg.connect(self.dsn, timeout=10)
        wake = asyncio.Event()
        try:
            if not await _await_leadership(conn, stop):
                return
            LEADING.set(1)
            log.info("outbox relay leading")
            await conn.add_listener(NOTIFY_CHANNEL, lambda *_: wake.set())
            delay = 0.5
            while not stop.is_set():
                wake.clear()  # before reading: a commit after this read wakes the next wait
                try:
                    count = await relay_batch(conn, producer, limit=self.batch)
                    delay = 0.5
                except KafkaError as exc:
                    FAILURES.labels(kind="kafka").inc()
                    log.warning("outbox publish failed; retrying from the first unacknowledged row",
                                extra={"error": repr(exc), "retry_in_s": delay})
                    await _wait(stop, delay)
                    delay = min(delay * 2, _MAX_BACKOFF_S)
                    continue
                PENDING.set(await pending_count(conn))
                if count < self.batch:
                    await _wait(stop, self.poll_interval_s, wake)
        finally:
            LEADING.set(0)
            await _close(conn)


async def _await_leadership(conn, stop: asyncio.Event) -> bool:
    """Block until this connection holds the relay lock (True) or `stop` is set (False)."""
    if await try_lead(conn):
        return True
    log.info("another outbox relay is active; standing by")
    locking = asyncio.ensure_future(conn.fetchval("SELECT pg_advisory_lock($1)", RELAY_LOCK_KEY))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({locking, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if locking.done():
        stopping.cancel()
        locking.result()
        return True
    locking.cancel()
    with contextlib.suppress(asyncio.CancelledError, asyncpg.PostgresError):
        await locking
    return False


async def _close(conn) -> None:
    """Close the connection (which releases the relay lock); drop it if it does not answer."""
    try:
        await conn.close(timeout=5)
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        conn.terminate()


async def _wait(stop: asyncio.Event, seconds: float, wake: asyncio.Event | None = None) -> None:
    """Until `seconds` pass, `stop` is set, or `wake` is set (whichever first)."""
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
