"""`cdr_consumer_lag_records`: what the consumer reports as lag, and that it forgets partitions it
no longer holds (a stale series would keep a lag alert firing for a partition another worker owns).

No broker: the consumer's assignment and fetch state are replaced, its committed offsets are the
ones Faust keeps (`_committed_offset`), and the timer's body is called directly.
"""

from __future__ import annotations

import faust
import pytest
from faust.types import TP

from cdr_mediation.topology import transport

TOPIC = "probe-lag.dlr.v1"
CHANGELOG = "probe-lag-ingest-changelog"


def _lag(topic: str, partition: int) -> float | None:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("cdr_consumer_lag_records", {"topic": topic, "partition": str(partition)})


def test_lag_is_highwater_minus_committed_for_committed_source_partitions() -> None:
    source0, source1, source2, changelog = TP(TOPIC, 0), TP(TOPIC, 1), TP(TOPIC, 2), TP(CHANGELOG, 0)
    highwaters = {source0: 120, source1: 7, source2: None, changelog: 900}
    committed = {source0: 100, source1: 7, source2: 3, changelog: None}
    lags = transport.partition_lags([source0, source1, source2, changelog], highwaters.get, committed.get,
                                    lambda topic: topic == TOPIC)
    # source2 was never fetched (no highwater): left out, not reported as 0 or as a guess.
    assert lags == {source0: 20, source1: 0}


def test_a_group_that_never_committed_is_not_reported() -> None:
    tp = TP(TOPIC, 0)
    assert transport.partition_lags([tp], {tp: 50}.get, {tp: -1}.get, lambda _: True) == {}


async def _export_lag_once(consumer) -> None:
    """One tick of the timer, without waiting for its interval (`Service.timer` wraps the method)."""
    await type(consumer)._export_lag.fun.__wrapped__(consumer)


@pytest.fixture
async def consumer():
    transport.register()
    app = faust.App("probe-lag", broker=f"{transport.SCHEME}://127.0.0.1:1")
    app.topics.add(app.topic(TOPIC, key_type=bytes, value_type=bytes))
    await app.topics._update_indices()
    return app.consumer


async def test_the_timer_exports_held_partitions_and_drops_released_ones(consumer, monkeypatch) -> None:
    tp0, tp1 = TP(TOPIC, 0), TP(TOPIC, 1)
    assert "_export_lag" in type(consumer)._tasks[type(consumer)._get_class_id()]  # started with the consumer
    held = {tp0, tp1}
    monkeypatch.setattr(consumer, "assignment", lambda: set(held))
    monkeypatch.setattr(consumer, "highwater", {tp0: 40, tp1: 9}.get)
    consumer._committed_offset.update({tp0: 10, tp1: 9})

    await _export_lag_once(consumer)
    assert (_lag(TOPIC, 0), _lag(TOPIC, 1)) == (30.0, 0.0)

    held.discard(tp1)  # a rebalance gave partition 1 to another worker
    await _export_lag_once(consumer)
    assert (_lag(TOPIC, 0), _lag(TOPIC, 1)) == (30.0, None)


async def test_a_failure_while_reading_offsets_never_escapes(consumer, monkeypatch) -> None:
    def not_started():
        raise RuntimeError("consumer not started")

    monkeypatch.setattr(consumer, "assignment", not_started)
    await _export_lag_once(consumer)
