"""Faust's aiokafka transport with highwaters a table recovery can trust on any broker.

Faust recovers a table by reading its changelog up to the partition's highwater, which it takes
from ListOffsets(latest) (`AIOKafkaConsumer.end_offsets`). Tansu answers that request wrongly
(ENVIRONMENT.md: the base offset + 1 of the newest record batch, not the log end), so recovery
stops early and a restored table silently misses its last updates. The high watermark that every
Fetch response carries is correct. This transport therefore reports, per partition,
`max(ListOffsets, high watermark of a Fetch at that offset)`; on Apache Kafka the two are equal,
so the override costs one short fetch per recovered partition and changes nothing.

Faust 0.15 has no setting for the consumer class, so the override is a transport registered under
its own URL scheme (`cdrkafka://`). It overrides a private method: faust-streaming is pinned in
pyproject.toml, and tests/integration/test_table_recovery.py fails if this stops working.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from typing import Any, Callable, Iterable, List, Mapping

from aiokafka import AIOKafkaConsumer
from aiokafka import errors as kafka_errors
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.protocol.group import LeaveGroupRequest
from aiokafka.structs import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.transport.drivers import TRANSPORTS
from faust.types import TP
from mode import Service
from mode.utils.futures import notify
from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

SCHEME = "cdrkafka"
EXIT_OFFSET_GAP = 70  # EX_SOFTWARE

UNPROCESSED_ACKS = Counter("cdr_consumer_unprocessed_acks_total",
                           "Messages a stream skipped across a rebalance; their offsets were not committed")
OFFSET_GAPS = Counter("cdr_consumer_offset_gaps_total", "Offset jumps within a partition (an error on our topics)")
# Bounded so that a broker that never answers cannot hang recovery forever.
FETCH_PROBE_TIMEOUT_S = 10.0


async def fetch_highwaters(
    bootstrap: list[str], listed: Mapping[TP, int], **client_options: Any
) -> dict[TP, int]:
    """High watermarks as Fetch responses report them, probing each partition at `listed[tp]`."""
    if not listed:
        return {}
    probe = AIOKafkaConsumer(
        **client_options,
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=1024,  # the watermark is all we want, not the records
    )
    await probe.start()
    try:
        partitions = [TopicPartition(tp.topic, tp.partition) for tp in listed]
        probe.assign(partitions)
        for tp in partitions:
            probe.seek(tp, listed[TP(tp.topic, tp.partition)])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FETCH_PROBE_TIMEOUT_S
        while any(probe.highwater(tp) is None for tp in partitions):
            if loop.time() > deadline:
                missing = [tp for tp in partitions if probe.highwater(tp) is None]
                raise TimeoutError(f"no Fetch high watermark for {missing} within {FETCH_PROBE_TIMEOUT_S}s")
            await probe.getmany(*[tp for tp in partitions if probe.highwater(tp) is None], timeout_ms=100)
        return {TP(tp.topic, tp.partition): probe.highwater(tp) for tp in partitions}
    finally:
        await probe.stop()


# Faust hard-codes a 1.5 s fetch long-poll. Tansu serves the requests of one connection in order,
# so a long-poll on partitions without data also delays the fetches, commits and heartbeats
# queued behind it; a short poll keeps a batch pipeline moving. On Apache Kafka it only means
# more, cheaper fetch requests while idle.
FETCH_MAX_WAIT_MS = 100


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport):
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts its fetcher
        return consumer

    async def on_thread_stop(self) -> None:
        # A clean stop (SIGTERM) must leave the group, so its partitions move at once. The
        # coordinator exists only once the consumer started; `super()` then stops the consumer,
        # which closes the coordinator and calls the replaced `_maybe_leave_group`.
        coordinator = getattr(self._consumer, "_coordinator", None)
        if isinstance(coordinator, GroupCoordinator):
            leave_group_at_any_generation(coordinator)
        await super().on_thread_stop()

    async def _highwaters(self, partitions: List[TP]) -> Mapping[TP, int]:
        listed = await super()._highwaters(partitions)
        if self.consumer.in_transaction:
            return listed
        conf = self.app.conf
        bootstrap = faust_aiokafka.server_list(self.transport.url, self.transport.default_port)
        auth = faust_aiokafka.credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context)
        fetched = await fetch_highwaters(bootstrap, listed, **auth)
        return {tp: max(listed[tp], fetched.get(tp, listed[tp])) for tp in listed}


def leave_group_at_any_generation(coordinator: GroupCoordinator) -> None:
    """Make `coordinator` send LeaveGroup on close whenever it is a member of a generation.

    aiokafka sends LeaveGroup only when `generation > 0`, but 0 is a real generation: Tansu
    numbers them from 0 (ENVIRONMENT.md), and a group formed in one round stays at 0. A worker
    stopped with SIGTERM then left silently and its partitions waited for the session timeout
    plus a JoinGroup round (measured: 16 s before the other worker got them, 21 s until every
    operator advanced). Apache Kafka numbers generations from 1, where this changes nothing.
    The request carries no generation, so it is the same request aiokafka sends otherwise.
    Replaces aiokafka's (private) `_maybe_leave_group` on this instance only: faust-streaming
    and aiokafka are pinned, and tests/integration/test_graceful_shutdown.py fails without it.
    """
    async def maybe_leave_group() -> None:
        # -1 is aiokafka's "no generation"; a static member (group_instance_id) must not leave.
        if coordinator.generation >= 0 and coordinator.member_id and coordinator._group_instance_id is None:
            try:
                # Best effort, as in aiokafka: a member that fails to leave is removed by the
                # session timeout, which is what happened before.
                await coordinator._send_req(LeaveGroupRequest(coordinator.group_id, coordinator.member_id))
            except kafka_errors.KafkaError as exc:
                log.warning("leaving the consumer group failed; the session timeout will remove this member",
                            extra={"group": coordinator.group_id, "generation": coordinator.generation,
                                   "error": repr(exc)})
            else:
                log.info("left the consumer group", extra={"group": coordinator.group_id,
                                                           "generation": coordinator.generation})
        coordinator.reset_generation()

    coordinator._maybe_leave_group = maybe_leave_group


RESUMED_BEHIND_COMMIT = Counter("cdr_consumer_resumed_behind_commit_total",
                                "Partitions resumed before their committed offset because the table "
                                "that consumes them had not applied the records in between")

# Per Faust app: source topic name → function(partition) → offset to resume from, or None.
_RESUME_POSITIONS: "weakref.WeakKeyDictionary[Any, dict[str, Callable[[int], int | None]]]" = weakref.WeakKeyDictionary()


def resume_from_table(app, topic_name: str, position_of: Callable[[int], int | None]) -> None:
    """Let a table decide where `topic_name`'s partitions resume after every seek to committed
    offsets (assignment, end of recovery, flow stopped): at `position_of(partition)` whenever
    that is before the committed offset.

    The committed offset says which records were acknowledged; only the table knows which
    records its state reflects. They differ when a restore missed the newest changelog records,
    and resuming at the committed offset would then skip records for good."""
    _RESUME_POSITIONS.setdefault(app, {})[topic_name] = position_of


SEEKS_WITH_FLOW_STOPPED = Counter("cdr_consumer_seeks_flow_stopped_total",
                                  "Seeks to committed offsets that found the flow active and stopped it first")


# Consumer lag, the one figure that says whether a worker keeps up. Faust computes none that
# reaches Prometheus, so the consumer exports it itself every LAG_INTERVAL_S, from the event loop
# (where Faust's own offsets change; a scrape-time collector would read them from the HTTP thread).
CONSUMER_LAG = Gauge("cdr_consumer_lag_records",
                     "Records of an assigned source partition not yet committed by this worker: the high "
                     "watermark of the consumer's latest fetch minus the committed offset. A record is a "
                     "batch record (up to 1,000 DLRs or chain entries), not one DLR. While an agent is "
                     "stalled its fetches stop, so the figure is a lower bound then", ["topic", "partition"])
LAG_INTERVAL_S = 15.0


def partition_lags(assignment: Iterable[TP], highwater_of: Callable[[TP], int | None],
                   committed_of: Callable[[TP], int | None],
                   acks_enabled_for: Callable[[str], bool]) -> dict[TP, int]:
    """Lag per assigned source partition: high watermark (the next offset the broker will write)
    minus the committed offset (the next offset the group will read). Partitions of topics this
    worker never commits (table changelogs) and partitions not fetched or committed yet are left
    out rather than guessed."""
    lags: dict[TP, int] = {}
    for tp in assignment:
        if not acks_enabled_for(tp.topic):
            continue
        highwater, committed = highwater_of(tp), committed_of(tp)
        if highwater is None or committed is None or committed < 0:
            continue
        lags[tp] = max(0, highwater - committed)
    return lags


class OffsetGap(RuntimeError):
    """Records of a partition arrived with offsets missing in between."""


class Consumer(faust_aiokafka.Consumer):
    """Faust's consumer, with two ways of committing unprocessed records closed.

    1. A message a stream skipped is not acknowledged. Faust's stream drops a message fetched
    before a rebalance (another generation, or flow stopped) without processing it, and still
    acks it (faust/streams.py `_py_aiter`: `value is skipped_value` → `event.ack()`). Its offset
    then joins the acked offsets of a partition the worker may keep, and the next commit passes
    it, while the re-fetch that should process it is still to come: a kill in between loses the
    record for good (the next owner starts after it). A stream marks every message it processes
    as `tracked` before the agent sees it, and skips before that, so an untracked message is
    recorded as done for its reference count but its offset is never committed: the re-fetch
    after the seek to the committed offset processes it (metric
    `cdr_consumer_unprocessed_acks_total`).

    2. An offset gap is treated as the error it is on our topics.

    3. No record is delivered while a seek to committed offsets is under way. At the end of a
    table recovery Faust resumes the stream partitions and only then seeks them to their
    committed offsets, while the flow is still active from reading the changelogs. A record
    fetched in between, after the seek of its partition, reaches its agent's queue, and
    `flow_control.resume()` right after the seek clears that queue: the record is never
    processed, and the next one follows it without an offset gap. Seen in
    tests/integration/test_resume_from_tables.py about every third run: CDR records the ingest agent
    emitted during that window were never stored or rolled up, and an ingest agent stopped for
    good. The seek therefore stops the flow first; its callers resume it.

    Faust fetches in a thread. A fetch still in flight when a rebalance seeks the partitions back
    to their committed offsets can return records from *before* the seek after it (Faust's own
    guards check the flow and the generation, both already restored by then). Faust delivers
    them, sees the offsets jump from the committed one, records the jump as a "gap" that it
    commits as if processed, and drops the re-fetched records as already read. Seen in the chaos
    test: nine CDR records (73 chain entries) never stored, their offsets committed.

    Our topics are neither compacted nor transactional, so their offsets are contiguous and a
    jump means records were not delivered. Here it stops the worker before the record after the
    jump is delivered; the deployment restarts it (Kubernetes; the chaos tests do the same) and it
    resumes from committed offsets, so nothing is skipped. (Skipping the stale records instead
    was tried: it starves a partition whenever the skipped records were in fact current.)
    Changelog topics (compacted) are never acked, so Faust never asks for their gaps.
    """

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    @Service.timer(LAG_INTERVAL_S)
    async def _export_lag(self) -> None:
        """Set `cdr_consumer_lag_records` for the partitions assigned now, and drop the series of
        partitions this worker no longer holds (another worker reports them)."""
        try:
            lags = partition_lags(self.assignment(), self.highwater, self._committed_offset.get,
                                  self.app.topics.acks_enabled_for)
        except Exception as exc:  # noqa: BLE001 - a metric, never fatal (e.g. mid-rebalance)
            log.debug("consumer lag not computed", extra={"error": repr(exc)})
            return
        exported = {(tp.topic, str(tp.partition)): lag for tp, lag in lags.items()}
        for labels in getattr(self, "_lag_labels", set()) - exported.keys():
            CONSUMER_LAG.remove(*labels)
        for labels, lag in exported.items():
            CONSUMER_LAG.labels(*labels).set(lag)
        self._lag_labels = set(exported)

    async def perform_seek(self) -> None:
        """Seek to committed offsets with the flow stopped (see 3. above); every caller resumes
        the flow afterwards (`Recovery.on_recovery_completed`, `Recovery._resume_streams`), or
        calls this because the flow is stopped (`Consumer.getmany`)."""
        if self.flow_active:
            SEEKS_WITH_FLOW_STOPPED.inc()
        self.stop_flow()
        await super().perform_seek()

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed = dict(await super().seek_to_committed())
        positions = _RESUME_POSITIONS.get(self.app, {})
        behind: dict[TP, int] = {}
        for tp in self.assignment():
            position_of = positions.get(tp.topic)
            resume = position_of(tp.partition) if position_of is not None else None
            if resume is None:
                continue
            offset = committed.get(tp)
            if offset is None or offset < 0 or resume < offset:
                behind[tp] = resume
        if behind:
            await self.seek_wait(behind)
            for tp, resume in behind.items():
                if committed.get(tp) is not None and committed[tp] >= 0:
                    RESUMED_BEHIND_COMMIT.inc()
                    log.warning("resuming a partition before its committed offset: its table had not applied "
                                "the records in between", extra={"source": f"kafka:{tp.topic}:{tp.partition}",
                                                                  "committed": committed[tp], "resume": resume})
                committed[tp] = resume
        return committed

    def ack(self, message) -> bool:
        if message.use_tracking and not message.tracked:
            # Skipped by a stream, never processed (see 1. above): never committed.
            message.acked = True
            UNPROCESSED_ACKS.inc()
            log.info("record skipped across a rebalance; its offset is left uncommitted for the re-fetch",
                     extra={"source": f"kafka:{message.topic}:{message.partition}:{message.offset}"})
            notify(self._waiting_for_ack)
            return False
        return super().ack(message)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        OFFSET_GAPS.inc()
        gap = OffsetGap(f"{tp.topic}[{tp.partition}]: offsets {offset_from}..{offset_to - 1} were never "
                        "delivered; refusing to commit them as processed")
        log.critical("offset gap: the worker stops now and resumes from committed offsets when restarted",
                     extra={"error": str(gap), "exit_status": EXIT_OFFSET_GAP})
        for handler in logging.getLogger().handlers:
            handler.flush()
        # Not an exception: Faust's crash path can leave the process alive and still in its
        # consumer group (seen: a crashed worker kept its partitions and the group stalled). An
        # immediate exit is what every agent is built to survive (SIGKILL chaos tests).
        os._exit(EXIT_OFFSET_GAP)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


def register() -> None:
    """Make `cdrkafka://host:port` resolve to this transport (idempotent)."""
    TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
