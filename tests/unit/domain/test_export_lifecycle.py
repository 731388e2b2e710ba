"""The export lifecycle table: every legal move, and every other (state, event) pair refused."""

from __future__ import annotations

import itertools

import pytest

from cdr_mediation.domain.export_lifecycle import (
    FINAL_STATES,
    TRANSITIONS,
    ExportEvent,
    ExportState,
    IllegalTransition,
    allowed_events,
    next_state,
    retry_delay,
)

S, E = ExportState, ExportEvent

# The lifecycle as DESIGN.md §6 and issue 6 state it, written out independently of the table.
EXPECTED = {
    (S.PENDING, E.BUILT): S.BUILT,
    (S.BUILT, E.SIGNED): S.SIGNED,
    (S.SIGNED, E.DELIVERED): S.DELIVERED,
    (S.DELIVERED, E.ACKED): S.ACKED,
    (S.DELIVERED, E.REJECTED): S.REJECTED,
    (S.DELIVERED, E.TIMED_OUT): S.TIMED_OUT,
    (S.TIMED_OUT, E.REDELIVERED): S.DELIVERED,
    (S.TIMED_OUT, E.ACKED): S.ACKED,
    (S.TIMED_OUT, E.REJECTED): S.REJECTED,
    (S.REJECTED, E.REBUILT): S.REBUILT,
    (S.REBUILT, E.SIGNED): S.SIGNED,
    (S.MANUAL, E.MANUALLY_DELIVERED): S.DELIVERED,
    (S.MANUAL, E.ACKED): S.ACKED,
    (S.MANUAL, E.REJECTED): S.REJECTED,
    (S.PENDING, E.DEADLINE_PASSED): S.MANUAL,
    (S.BUILT, E.DEADLINE_PASSED): S.MANUAL,
    (S.SIGNED, E.DEADLINE_PASSED): S.MANUAL,
    (S.DELIVERED, E.DEADLINE_PASSED): S.MANUAL,
    (S.TIMED_OUT, E.DEADLINE_PASSED): S.MANUAL,
    (S.REJECTED, E.DEADLINE_PASSED): S.MANUAL,
    (S.REBUILT, E.DEADLINE_PASSED): S.MANUAL,
    (S.SIGNED, E.DELIVERY_REFUSED): S.MANUAL,
    (S.MANUAL, E.RESUMED): S.PENDING,
}


def test_the_table_is_exactly_the_documented_lifecycle() -> None:
    assert dict(TRANSITIONS) == EXPECTED


@pytest.mark.parametrize("state,event", sorted(EXPECTED, key=str))
def test_each_legal_move(state: ExportState, event: ExportEvent) -> None:
    assert next_state(state, event) is EXPECTED[(state, event)]
    assert event in allowed_events(state)


@pytest.mark.parametrize("state,event", [pair for pair in itertools.product(S, E) if pair not in EXPECTED],
                         ids=lambda value: value.value)
def test_every_other_move_is_refused_with_what_is_allowed(state: ExportState, event: ExportEvent) -> None:
    with pytest.raises(IllegalTransition) as refused:
        next_state(state, event)
    assert refused.value.state is state and refused.value.event is event
    assert state.value in str(refused.value) and repr(event.value) in str(refused.value)


def test_acked_is_final_and_says_so() -> None:
    assert FINAL_STATES == {S.ACKED} and allowed_events(S.ACKED) == frozenset()
    with pytest.raises(IllegalTransition, match="nothing, it is final"):
        next_state(S.ACKED, E.DELIVERED)


def test_the_happy_path_and_the_rejection_path_end_acked() -> None:
    state = S.PENDING
    for event in (E.BUILT, E.SIGNED, E.DELIVERED, E.REJECTED, E.REBUILT, E.SIGNED, E.DELIVERED,
                  E.TIMED_OUT, E.REDELIVERED, E.ACKED):
        state = next_state(state, event)
    assert state is S.ACKED


def test_a_refused_delivery_goes_to_manual_at_once_and_a_person_resumes_it_from_the_start() -> None:
    state = S.PENDING
    for event in (E.BUILT, E.SIGNED, E.DELIVERY_REFUSED):
        state = next_state(state, event)
    assert state is S.MANUAL
    for event in (E.RESUMED, E.BUILT, E.SIGNED, E.DELIVERED, E.ACKED):
        state = next_state(state, event)
    assert state is S.ACKED
    with pytest.raises(IllegalTransition):
        next_state(S.DELIVERED, E.RESUMED)  # only a file a person holds is resumed


def test_every_state_can_reach_acked() -> None:
    reachable = {S.ACKED}
    changed = True
    while changed:
        changed = False
        for (source, _), target in TRANSITIONS.items():
            if target in reachable and source not in reachable:
                reachable.add(source)
                changed = True
    assert reachable == set(S)


def test_values_from_storage_are_accepted_as_strings() -> None:
    assert next_state("SIGNED", "delivered") is S.DELIVERED
    with pytest.raises(ValueError):
        next_state("SHIPPED", "delivered")


def test_retry_delay_doubles_then_caps() -> None:
    assert [retry_delay(n) for n in range(1, 10)] == [5, 10, 20, 40, 80, 160, 320, 640, 900]
    assert retry_delay(10_000) == 900
    with pytest.raises(ValueError):
        retry_delay(0)
