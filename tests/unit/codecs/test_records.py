"""The CDR topic's two record kinds and the rollup-closed record: round trips and refusals."""

from __future__ import annotations

import orjson
import pytest

from cdr_mediation.codecs.records import (
    UndecodableRecord,
    decode_cdr_topic_record,
    decode_rollup_closed,
    encode_cdr_records,
    encode_chain_refusal,
    encode_clock_tick,
    encode_rollup_closed,
)
from cdr_mediation.domain.adjustment import ChainRefusal
from cdr_mediation.domain.rollup import ClockTick, HourRollup, RollupClosed


def test_a_clock_tick_comes_back_as_a_tick_and_a_cdr_batch_as_its_entries() -> None:
    tick = ClockTick("op-a", "2026-11-01T08:01:00.000Z")
    assert decode_cdr_topic_record(encode_clock_tick(tick)) == tick
    pairs = [({"not": "checked here"}, "a" * 64)]
    with pytest.raises(UndecodableRecord):  # entries must have a CDR's members
        decode_cdr_topic_record(encode_cdr_records(pairs)[0])


def test_a_malformed_tick_is_refused_not_mistaken_for_a_batch() -> None:
    for value in (b'{"format":"clock-tick.v1","operator_id":"op-a"}',
                  b'{"format":"clock-tick.v1","operator_id":7,"at":"2026-11-01T08:00:00.000Z"}',
                  b'{"format":"clock-tick.v1",'):
        with pytest.raises(UndecodableRecord):
            decode_cdr_topic_record(value)


def test_a_chain_refusal_round_trips_and_a_malformed_one_is_refused() -> None:
    refusal = ChainRefusal("0b6c8a4e-2f0e-4d8b-9f4a-3f1f6f0f6a11", "op-a", "4df915ca-f22c-5214-9542-631074267f2a",
                           "stale_version", "the request supersedes a version no longer in force")
    assert decode_cdr_topic_record(encode_chain_refusal(refusal)) == refusal
    for value in (b'{"format":"adjustment-refused.v1","refusal":{"adjustment_id":"x"}}',
                  b'{"format":"adjustment-refused.v1","refusal":{}, "extra":1}',
                  b'{"format":"adjustment-refused.v1",'):
        with pytest.raises(UndecodableRecord):
            decode_cdr_topic_record(value)


def test_a_rollup_close_round_trips_exactly() -> None:
    rollup = HourRollup.empty("op-a", "2026-11-01T08:00:00.000Z", "EUR")
    closed = RollupClosed(rollup, 0, 12, "b" * 64, "tick", "2026-11-01T10:01:00.000Z")
    value = encode_rollup_closed(closed)
    assert decode_rollup_closed(value) == closed
    assert decode_rollup_closed(orjson.dumps(orjson.loads(value))) == closed
    with pytest.raises(UndecodableRecord):
        decode_rollup_closed(b'{"format":"cdr-batch.v1","entries":[]}')
