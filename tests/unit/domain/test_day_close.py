"""A day closes for export with its last hour's revision 0 — by the stream, the same on replay."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest

from cdr_mediation.codecs.records import UndecodableRecord, decode_day_closed, encode_day_closed
from cdr_mediation.domain.day_close import DayClosed, days_closed
from cdr_mediation.domain.rollup import ClockTick, OperatorRollupState, apply_entries

from .test_rollup import OP, Chain, at, run, run_sliced


def test_no_day_closes_before_the_watermark_passes_midnight_plus_grace() -> None:
    chain = Chain()
    step = run([chain.cdr(at(22, 10)), chain.cdr(at(23, 59, 59, 999)), chain.cdr(at(1, 59, 59, 999, day=11))])
    assert [c.hour_start for c in step.closed][-1] == at(22)  # 23:00 needs 01:00 + 2 h
    assert days_closed(step.closed, 0) == ()


def test_the_event_that_closes_hour_23_closes_the_day_with_its_chain_head() -> None:
    chain = Chain()
    items = [chain.cdr(at(23, 30)), chain.cdr(at(1, 0, day=11)), chain.cdr(at(2, 0, day=11))]
    step = run(items)
    (day,) = days_closed(step.closed, 0)
    last_hour = next(c for c in step.closed if c.hour_start == at(23))
    assert day == DayClosed(OP, "2026-04-10", "event", 3, items[2][1], at(2, 0, day=11), 1)
    assert step.new_state.days_closed == 1
    assert (day.chain_head_seq, day.chain_head_hash) == (last_hour.chain_head_seq, last_hour.chain_head_hash)


def test_an_idle_operator_day_is_closed_by_an_explicit_tick() -> None:
    chain = Chain()
    state = run([chain.cdr(at(9, 15))]).new_state
    step = apply_entries(state, [ClockTick(OP, at(2, 0, day=11))], dt.timedelta(hours=2))
    (day,) = days_closed(step.closed, state.days_closed)
    assert (day.day, day.closed_by, day.chain_head_seq) == ("2026-04-10", "tick", 1)


def test_a_jump_over_several_days_closes_each_day_once_in_order() -> None:
    chain = Chain()
    step = run([chain.cdr(at(10, 0)), chain.cdr(at(3, 0, day=14))])
    days = days_closed(step.closed, 0)
    assert [d.day for d in days] == ["2026-04-10", "2026-04-11", "2026-04-12", "2026-04-13"]
    assert [d.day_sequence for d in days] == [1, 2, 3, 4] and step.new_state.days_closed == 4


def test_late_corrections_of_a_closed_day_do_not_close_it_again() -> None:
    chain = Chain()
    first = run([chain.cdr(at(23, 0)), chain.cdr(at(2, 0, day=11))])
    assert [d.day for d in days_closed(first.closed, 0)] == ["2026-04-10"]
    # A late event of hour 23 (revision 1 at the next close) and the next day's events.
    later = run([chain.cdr(at(23, 5)), chain.cdr(at(5, 0, day=11))], first.new_state)
    assert any(c.revision == 1 and c.hour_start == at(23) for c in later.closed)
    assert days_closed(later.closed, first.new_state.days_closed) == ()
    assert later.new_state.days_closed == 1


def test_a_backfilled_day_closes_as_a_correction() -> None:
    chain = Chain()
    state = run([chain.cdr(at(10, 0, day=11)), chain.cdr(at(13, 0, day=11))]).new_state  # 10:00 of day 11 closed
    late = run([chain.cdr(at(22, 0, day=10)), chain.cdr(at(14, 0, day=11))], state)
    (day,) = days_closed(late.closed, state.days_closed)
    # Closed after day 11's hours began closing, it takes the next number, not its calendar place.
    assert (day.day, day.closed_by, day.day_sequence) == ("2026-04-10", "correction", 1)
    assert late.new_state.days_closed == 1


def test_batch_boundaries_and_replays_close_the_same_days_with_the_same_values() -> None:
    chain = Chain()
    items = [chain.cdr(at(h % 24, 7, day=10 + h // 24)) for h in range(20, 75, 3)]
    whole = days_closed(run(items).closed, 0)
    final, sliced, _ = run_sliced(items, [1, 5, 6, 11])
    assert days_closed(sliced, 0) == whole and final.days_closed == len(whole)
    assert days_closed(sliced, 0) == whole and [d.day for d in whole] == ["2026-04-10", "2026-04-11", "2026-04-12"]
    # Replaying a prefix on the state it produced changes nothing.
    state = run(items).new_state
    assert days_closed(apply_entries(state, items[:9], dt.timedelta(hours=2)).closed, state.days_closed) == ()


def test_day_closed_record_round_trips_and_refuses_malformed() -> None:
    day = DayClosed(OP, "2026-04-10", "tick", 7, "ab" * 32, at(2, 0, day=11), 3)
    assert decode_day_closed(encode_day_closed(day)) == day
    document = day.to_dict()
    for bad in ({**document, "closed_by": "wall-clock"}, {**document, "day": "10.04.2026"},
                {**document, "chain_head_seq": -1}, {**document, "day_sequence": 0},
                {k: v for k, v in document.items() if k != "watermark"}):
        value = orjson.dumps({"format": "day-closed.v1", "closed": bad})
        with pytest.raises(UndecodableRecord):
            decode_day_closed(value)
    with pytest.raises(UndecodableRecord):
        decode_day_closed(b'{"format":"rollup-closed.v1","closed":{}}')


def test_initial_state_has_nothing_to_close() -> None:
    assert days_closed(apply_entries(OperatorRollupState.initial(OP), [], dt.timedelta(hours=2)).closed, 0) == ()


def test_day_numbers_continue_across_steps_and_survive_the_state_round_trip() -> None:
    chain = Chain()
    first = run([chain.cdr(at(10, 0)), chain.cdr(at(3, 0, day=12))])  # closes days 10 and 11
    state = OperatorRollupState.from_dict(first.new_state.to_dict())
    assert state.days_closed == 2
    second = apply_entries(state, [chain.cdr(at(3, 0, day=14))], dt.timedelta(hours=2))  # days 12 and 13
    assert [(d.day, d.day_sequence) for d in days_closed(second.closed, state.days_closed)] == [
        ("2026-04-12", 3), ("2026-04-13", 4)]


def test_a_state_stored_before_day_numbers_existed_reads_as_none_closed() -> None:
    document = OperatorRollupState.initial(OP).to_dict()
    del document["days_closed"]
    assert OperatorRollupState.from_dict(document).days_closed == 0
