"""Hourly rollups (pure domain): exact under replays, duplicates, reorder, late data and slicing.

Every stream is a real chain: DLRs are parsed, projected with the sample pricing and linked with
`chain.link`, so ``prev_hash`` / ``record_hash`` linkage is the production one. `Sink` plays the
idempotent store of closed rollups: it fails the test if a re-emission differs from what it holds.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any, Iterable, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdr_mediation.domain.cdr import Cdr, format_utc
from cdr_mediation.domain.chain import BreakKind, ChainHead, link, verify_chain
from cdr_mediation.domain.dlr import parse_dlr
from cdr_mediation.domain.pricing import PricingSnapshot, load_snapshot
from cdr_mediation.domain.projection import cdr_id_for, project
from cdr_mediation.domain.rollup import (
    ADJUSTMENT_TYPES,
    CLOSED_BY_CORRECTION,
    DEFAULT_GRACE,
    STATUSES,
    ChainDiscontinuity,
    ClockTick,
    CurrencyMismatch,
    HourRollup,
    InvalidRollupInput,
    OperatorRollupState,
    RollupClosed,
    RollupStep,
    apply_entries,
    diff_rollups,
    hour_of,
    merge,
    recompute_rollups,
    rollups_from_closes,
)

from .domain_samples import PRICING_DOC, dlr_doc

OP = "op-a"
PRICING: PricingSnapshot = load_snapshot(json.dumps(PRICING_DOC).encode())
T0 = dt.datetime(2026, 4, 10, 6, tzinfo=dt.timezone.utc)


def at(hh: int, mm: int = 0, ss: int = 0, ms: int = 0, day: int = 10) -> str:
    return f"2026-04-{day:02d}T{hh:02d}:{mm:02d}:{ss:02d}.{ms:03d}Z"


def hour(hh: int, day: int = 10) -> str:
    return at(hh, day=day)


class Chain:
    """One operator's chain, built with the real projection and linking code."""

    def __init__(self, operator_id: str = OP) -> None:
        self.operator_id = operator_id
        self.head = ChainHead.genesis(operator_id)
        self.n = 0
        self.in_force: dict[str, dict] = {}  # original cdr_id -> its version in force

    def cdr(self, done_at: str, status: str = "DELIVERED", segments: int = 1, tenant_id: str = "tenant-1",
            **changes: Any) -> tuple[dict, str]:
        """A CDR priced by the sample snapshot; `changes` alter the projected CDR before linking."""
        self.n += 1
        doc = dlr_doc(
            dlr_id=f"{self.operator_id}-dlr-{self.n:06d}", message_id=f"msg-{self.n}",
            operator_id=self.operator_id, status=status, segments=segments, tenant_id=tenant_id,
            submitted_at="2026-04-01T00:00:00.000Z", done_at=done_at,
        )
        unlinked = project(parse_dlr(json.dumps(doc).encode()), PRICING)
        entry, digest = self._link(dataclasses.replace(unlinked, **changes) if changes else unlinked)
        self.in_force[entry["cdr_id"]] = entry
        return entry, digest

    def adjustment(self, kind: str, original: dict, **corrected: Any) -> tuple[dict, str, dict]:
        """A VOID / CORRECT of `original`'s version in force (same done_at, so it lands in the
        original's hour), as the ingest agent emits it: (entry, record_hash, supersedes)."""
        self.n += 1
        supersedes = self.in_force.pop(original["cdr_id"])  # KeyError: voided (the ingest refuses)
        values = {**supersedes, **corrected, "record_type": kind, "cdr_id": cdr_id_for(f"adj-{self.n}"),
                  "ref_cdr_id": original["cdr_id"], "ticket_ref": f"T-{self.n}", "actor": "admin",
                  "chain_seq": 0, "prev_hash": ""}
        if kind == "VOID":
            values.update(billable=False, amount_minor=0, tax_minor=0)
        entry, digest = self._link(Cdr.from_entry(values))
        if kind == "CORRECT":
            self.in_force[original["cdr_id"]] = entry
        return entry, digest, supersedes

    def _link(self, unlinked: Cdr) -> tuple[dict, str]:
        linked, digest = link(self.head, unlinked)
        self.head = self.head.advance(linked, digest)
        return linked.to_entry(), digest


def run(items: Sequence, state: OperatorRollupState | None = None, grace: dt.timedelta = DEFAULT_GRACE) -> RollupStep:
    return apply_entries(state or OperatorRollupState.initial(OP), items, grace)


def run_sliced(items: Sequence, cuts: Iterable[int], grace: dt.timedelta = DEFAULT_GRACE,
               operator_id: str = OP) -> tuple[OperatorRollupState, list[RollupClosed], tuple[int, int, int]]:
    state = OperatorRollupState.initial(operator_id)
    closed: list[RollupClosed] = []
    counters = [0, 0, 0]
    bounds = [0, *sorted(set(cuts)), len(items)]
    for lo, hi in zip(bounds, bounds[1:]):
        step = apply_entries(state, items[lo:hi], grace)
        state = step.new_state
        closed.extend(step.closed)
        counters = [counters[0] + step.duplicates, counters[1] + step.late_events, counters[2] + step.applied]
    return state, closed, tuple(counters)


class Sink:
    """Idempotent store of closed rollups keyed by (operator, hour, revision)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, int], dict] = {}
        self.writes = 0

    def put(self, closes: Iterable[RollupClosed]) -> None:
        for close in closes:
            value = close.to_dict()
            assert self.rows.setdefault(close.key, value) == value, f"re-emission of {close.key} differs"
            self.writes += 1


# --- windows and closing ------------------------------------------------------------------------


class TestWindows:
    def test_event_exactly_on_the_hour_belongs_to_that_hour(self) -> None:
        chain = Chain()
        step = run([chain.cdr(at(10, 0, 0, 0)), chain.cdr(at(9, 59, 59, 999))])
        assert sorted(step.new_state.open_hours) == [hour(9), hour(10)]
        assert step.new_state.open_hours[hour(10)].first_chain_seq == 1
        assert step.new_state.open_hours[hour(9)].last_chain_seq == 2

    def test_last_millisecond_belongs_to_the_hour_it_ends(self) -> None:
        chain = Chain()
        step = run([chain.cdr(at(10, 59, 59, 999)), chain.cdr(at(11, 0, 0, 0))])
        assert step.new_state.open_hours[hour(10)].records == 1
        assert step.new_state.open_hours[hour(11)].records == 1
        assert hour_of(at(10, 59, 59, 999)) == hour(10) == hour_of(at(10))

    def test_hour_closes_exactly_at_end_plus_grace_with_head_after_the_closing_entry(self) -> None:
        chain = Chain()
        items = [chain.cdr(at(10, 5)), chain.cdr(at(12, 59, 59, 999))]
        first = run(items)
        assert first.closed == () and first.new_state.closed_through is None
        closing = chain.cdr(at(13, 0, 0, 0))
        step = run([closing], first.new_state)
        (close,) = step.closed
        assert (close.hour_start, close.revision, close.closed_by) == (hour(10), 0, "event")
        assert (close.chain_head_seq, close.chain_head_hash) == (3, closing[1])
        assert close.watermark == at(13)
        assert close.rollup.hour_end == hour(11)
        assert step.new_state.closed_through == step.new_state.first_hour == hour(10)

    def test_zero_grace_closes_at_the_hour_end(self) -> None:
        chain = Chain()
        step = run([chain.cdr(at(10, 30)), chain.cdr(at(11, 0))], grace=dt.timedelta(0))
        assert [c.hour_start for c in step.closed] == [hour(10)]
        assert list(step.new_state.open_hours) == [hour(11)]

    def test_counts_amounts_and_segments_by_status(self) -> None:
        chain = Chain()
        items = [
            chain.cdr(at(10, 1), "DELIVERED", 3),
            chain.cdr(at(10, 2), "DELIVERED", 1),
            chain.cdr(at(10, 3), "UNDELIVERED", 2, error_code="001"),
            chain.cdr(at(10, 4), "EXPIRED"),
            chain.cdr(at(10, 5), "REJECTED"),
            chain.cdr(at(10, 6), "DELIVERED", 2, "tenant-7"),  # 4 minor units per segment
            chain.cdr(at(13)),
        ]
        (close,) = run(items).closed
        r = close.rollup
        assert dict(r.counts) == {"DELIVERED": 3, "UNDELIVERED": 1, "EXPIRED": 1, "REJECTED": 1, "UNKNOWN": 0}
        assert (r.records, r.billable_records, r.billable_segments) == (6, 3, 6)
        assert (r.amount_minor, r.tax_minor, r.currency) == (5 * 4 + 4 * 2, 4 + 2, "EUR")
        assert (r.first_chain_seq, r.last_chain_seq) == (1, 6)
        assert dict(r.adjustments) == {"VOID": 0, "CORRECT": 0}

    def test_a_correction_replaces_the_version_in_force_and_a_void_takes_it_out(self) -> None:
        chain = Chain()
        original = chain.cdr(at(10, 10), "DELIVERED", 2)
        other = chain.cdr(at(10, 20), "DELIVERED", 1)
        correct = chain.adjustment("CORRECT", original[0], status="UNDELIVERED", amount_minor=3, tax_minor=1)
        items = [original, other, correct, chain.adjustment("VOID", other[0]), chain.cdr(at(13))]
        assert verify_chain(OP, [{**e, "record_hash": h} for e, h, *_ in items]).ok
        (close,) = run(items).closed
        r = close.rollup
        # In force: the corrected first record only (UNDELIVERED, 3 + 1); `other` is voided.
        assert (r.records, r.amount_minor, r.tax_minor, r.billable_segments) == (1, 3, 1, 2)
        assert dict(r.counts) == {**dict.fromkeys(STATUSES, 0), "UNDELIVERED": 1}
        assert dict(r.adjustments) == {"VOID": 1, "CORRECT": 1}
        assert (r.first_chain_seq, r.last_chain_seq) == (1, 4)

    def test_an_adjustment_of_a_closed_hour_is_a_delta_that_nets_it(self) -> None:
        chain = Chain()
        original = chain.cdr(at(10, 10), "DELIVERED", 2)
        step = run([original, chain.cdr(at(16))])
        assert step.closed[0].hour_start == hour(10) and step.closed[0].rollup.records == 1
        void = chain.adjustment("VOID", original[0])
        later = run([void, chain.cdr(at(20))], step.new_state)
        (delta,) = [c for c in later.closed if c.revision == 1]
        assert delta.hour_start == hour(10) and delta.closed_by == CLOSED_BY_CORRECTION
        assert (delta.rollup.records, delta.rollup.amount_minor, delta.rollup.billable_records) == (
            -1, -original[0]["amount_minor"], -1)
        merged = merge([step.closed[0], delta])
        assert (merged.records, merged.amount_minor, merged.tax_minor) == (0, 0, 0)
        assert merged == recompute_rollups([original[0], void[0]])[hour(10)]

    def test_an_adjustment_without_the_version_it_supersedes_is_refused(self) -> None:
        chain = Chain()
        original = chain.cdr(at(10, 10))
        entry, digest, _ = chain.adjustment("VOID", original[0])
        with pytest.raises(InvalidRollupInput, match="supersedes"):
            run([original, (entry, digest)])

    def test_empty_hours_are_closed_explicitly_but_not_before_the_first_event(self) -> None:
        chain = Chain()
        step = run([chain.cdr(at(10, 5)), chain.cdr(at(15, 0))])
        assert [(c.hour_start, c.rollup.is_empty, c.rollup.records) for c in step.closed] == [
            (hour(10), False, 1), (hour(11), True, 0), (hour(12), True, 0),
        ]
        empty = step.closed[1].rollup
        assert empty == HourRollup.empty(OP, hour(11), "EUR")
        assert dict(empty.counts) == dict.fromkeys(STATUSES, 0)
        assert step.new_state.first_hour == hour(10)

    def test_closes_are_in_hour_order_and_each_hour_once(self) -> None:
        chain = Chain()
        items = [chain.cdr(at(h, 10)) for h in range(6, 23)]
        _, closed, _ = run_sliced(items, [3, 4, 9])
        hours = [c.hour_start for c in closed]
        assert hours == sorted(hours) == sorted(set(hours)) == [hour(h) for h in range(6, 20)]


# --- exactness: duplicates, replays, chain checks -----------------------------------------------


def day_stream() -> list:
    """One operator's day with variety: in-grace reorder, late entries, ticks (one stale), a VOID."""
    chain = Chain()
    items: list = []
    items += [chain.cdr(at(9, 50)), chain.cdr(at(10, 5), "EXPIRED"), chain.cdr(at(9, 55), "UNKNOWN")]
    items += [chain.cdr(at(11, 30), "DELIVERED", 3), chain.cdr(at(12, 15))]
    items += [ClockTick(OP, at(12, 40))]
    items += [chain.cdr(at(13, 1)), chain.cdr(at(9, 59), "REJECTED")]  # 09:00 closed: late
    items += [chain.adjustment("VOID", items[3][0])]  # the 11:30 CDR, hour still open
    items += [chain.cdr(at(14, 30)), ClockTick(OP, at(14, 0)), chain.cdr(at(10, 20))]
    items += [ClockTick(OP, at(19, 0, 0, 1)), chain.cdr(at(19, 5))]
    return items


class TestExactness:
    def test_replaying_the_whole_stream_changes_nothing(self) -> None:
        items = day_stream()
        first = run(items)
        again = run(items, first.new_state)
        assert again.new_state == first.new_state
        assert (again.closed, again.applied, again.late_events) == ((), 0, 0)
        assert again.duplicates == sum(1 for item in items if not isinstance(item, ClockTick))

    @pytest.mark.parametrize("prefix", range(0, len(day_stream()) + 1))
    def test_reapplying_any_prefix_changes_nothing(self, prefix: int) -> None:
        items = day_stream()
        partial = run(items[:prefix]).new_state
        assert run(items[:prefix], partial).new_state == partial
        final = run(items).new_state
        again = run(items[:prefix], final)
        assert again.new_state == final and again.closed == ()

    def test_reemitted_ranges_are_ignored_and_counted(self) -> None:
        items = day_stream()
        noisy = items[:5] + items[1:4] + items[5:9] + items[0:9] + items[9:]
        clean, dirty = run(items), run(noisy)
        assert dirty.new_state == clean.new_state and dirty.closed == clean.closed
        assert dirty.duplicates == 3 + 8  # the re-emitted entries (the re-emitted tick is a no-op)

    def test_duplicate_of_the_head_with_another_hash_is_a_fork(self) -> None:
        chain, other = Chain(), Chain()
        other.cdr(at(10, 0))
        forged = other.cdr(at(10, 1))  # chain_seq 2 of a different chain
        first = run([chain.cdr(at(10, 0)), chain.cdr(at(10, 1), "EXPIRED")])
        with pytest.raises(ChainDiscontinuity) as info:
            run([forged], first.new_state)
        assert (info.value.kind, info.value.seq) == (BreakKind.DUPLICATE_SEQ, 2)

    def test_gap_raises_chain_discontinuity(self) -> None:
        chain = Chain()
        items = [chain.cdr(at(10, m)) for m in range(4)]
        with pytest.raises(ChainDiscontinuity) as info:
            run([items[0], items[1], items[3]])
        error = info.value
        assert (error.kind, error.seq, error.expected, error.found) == (BreakKind.GAP, 3, "3", "4")
        with pytest.raises(ChainDiscontinuity):
            run([items[1]])  # the first entry must be chain_seq 1

    def test_prev_hash_mismatch_raises_chain_discontinuity(self) -> None:
        chain = Chain()
        e1, e2 = chain.cdr(at(10, 0)), chain.cdr(at(10, 1))
        tampered = ({**e2[0], "prev_hash": "f" * 64}, e2[1])
        with pytest.raises(ChainDiscontinuity) as info:
            run([e1, tampered])
        error = info.value
        assert (error.kind, error.seq, error.expected, error.found) == (
            BreakKind.PREV_HASH_MISMATCH, 2, e1[1], "f" * 64)

    def test_an_error_leaves_the_given_state_untouched(self) -> None:
        chain = Chain()
        items = [chain.cdr(at(10, 0)), chain.cdr(at(13, 30)), chain.cdr(at(10, 30))]
        state = run(items).new_state
        snapshot = json.dumps(state.to_dict())
        bad = chain.cdr(at(14, 0))
        with pytest.raises(ChainDiscontinuity):
            run([chain.cdr(at(15, 0)), ({**bad[0], "chain_seq": 9}, bad[1])], state)
        assert json.dumps(state.to_dict()) == snapshot

    @pytest.mark.parametrize("crash_at", range(0, 7))
    def test_crash_between_emit_and_state_write_re_emits_identical_closes(self, crash_at: int) -> None:
        items = day_stream()
        batches = [items[i:i + 2] for i in range(0, len(items), 2)]
        clean = Sink()
        state = OperatorRollupState.initial(OP)
        for batch in batches:
            step = run(batch, state)
            clean.put(step.closed)
            state = step.new_state
        sink, state = Sink(), OperatorRollupState.initial(OP)
        for number, batch in enumerate(batches):
            step = run(batch, state)
            sink.put(step.closed)  # 1. emit
            if number == crash_at:  # crash before 2. (state write): the batch comes again
                step = run(batch, state)
                sink.put(step.closed)
            state = step.new_state  # 2. state
        assert sink.rows == clean.rows and state == run(items).new_state


# --- late data, grace, corrections --------------------------------------------------------------


class TestLateData:
    def test_reorder_within_grace_gives_the_same_closed_values(self) -> None:
        times = [at(10, 5), at(10, 40), at(11, 10), at(11, 50), at(12, 20), at(13, 5), at(14, 45)]
        statuses = ["DELIVERED", "EXPIRED", "DELIVERED", "UNKNOWN", "REJECTED", "DELIVERED", "DELIVERED"]
        order = [1, 0, 3, 2, 5, 4, 6]  # each swap within 1 h < grace
        in_order, shuffled = Chain(), Chain()
        a = [in_order.cdr(t, s) for t, s in zip(times, statuses)] + [ClockTick(OP, at(20))]
        b = [shuffled.cdr(times[i], statuses[i]) for i in order] + [ClockTick(OP, at(20))]
        step_a, step_b = run(a), run(b)
        assert step_a.late_events == step_b.late_events == 0

        def values(step: RollupStep) -> list:
            return [(c.hour_start, c.revision, c.rollup.to_dict() | {"first_chain_seq": 0, "last_chain_seq": 0})
                    for c in step.closed]

        assert values(step_a) == values(step_b)
        assert [c.hour_start for c in step_a.closed] == [hour(h) for h in range(10, 18)]

    def test_late_beyond_grace_becomes_a_correction_revision_never_dropped(self) -> None:
        chain = Chain()
        step1 = run([chain.cdr(at(10, 5)), chain.cdr(at(10, 30)), chain.cdr(at(13, 0))])
        assert [c.hour_start for c in step1.closed] == [hour(10)]
        late = chain.cdr(at(10, 45), "EXPIRED", 2)
        step2 = run([late], step1.new_state)
        assert (step2.closed, step2.late_events, step2.applied) == ((), 1, 1)
        assert step2.new_state.pending_corrections[hour(10)].counts["EXPIRED"] == 1
        assert hour(10) not in step2.new_state.open_hours

        step3 = run([chain.cdr(at(14, 0))], step2.new_state)  # closes 11:00 -> flushes first
        assert [(c.hour_start, c.revision, c.closed_by) for c in step3.closed] == [
            (hour(10), 1, "correction"), (hour(11), 0, "event"),
        ]
        delta = step3.closed[0].rollup
        assert (delta.records, delta.first_chain_seq, delta.last_chain_seq) == (1, 4, 4)
        assert step3.new_state.pending_corrections == {} and step3.new_state.revisions == {hour(10): 1}
        assert step3.closed[0].chain_head_seq == 5

        step4 = run([chain.cdr(at(10, 15)), ClockTick(OP, at(15))], step3.new_state)
        assert step4.late_events == 1
        assert [(c.hour_start, c.revision, c.closed_by) for c in step4.closed] == [
            (hour(10), 2, "correction"), (hour(12), 0, "tick"),
        ]
        assert step4.closed[0].rollup.records == 1  # a delta: only the late entry since revision 1
        merged = merge([step1.closed[0], step3.closed[0], step4.closed[0]])
        assert (merged.records, merged.first_chain_seq, merged.last_chain_seq) == (4, 1, 6)

    def test_late_entry_before_the_first_hour_backfills_the_range(self) -> None:
        chain = Chain()
        items = [chain.cdr(at(10, 5)), chain.cdr(at(13, 0)), chain.cdr(at(7, 30)), chain.cdr(at(14, 0))]
        step = run(items)
        assert [(c.hour_start, c.revision, c.closed_by, c.rollup.records) for c in step.closed] == [
            (hour(10), 0, "event", 1),
            (hour(7), 0, "correction", 1), (hour(8), 0, "correction", 0), (hour(9), 0, "correction", 0),
            (hour(11), 0, "event", 0),
        ]
        assert step.new_state.first_hour == hour(7) and step.new_state.revisions == {}
        later = [chain.cdr(at(8, 10)), chain.cdr(at(15, 0))]
        more = run(later, step.new_state)
        assert [(c.hour_start, c.revision) for c in more.closed] == [(hour(8), 1), (hour(12), 0)]
        assert more.new_state.revisions == {hour(8): 1}
        recomputed = recompute_rollups([item[0] for item in items + later], end_hour=more.new_state.closed_through)
        assert list(recomputed) == [hour(h) for h in range(7, 13)]
        assert rollups_from_closes(step.closed + more.closed) == recomputed

    def test_grace_cannot_change_under_a_state(self) -> None:
        chain = Chain()
        state = run([chain.cdr(at(10))]).new_state
        assert state.grace_ms == 2 * 3600 * 1000
        with pytest.raises(InvalidRollupInput, match="grace"):
            run([chain.cdr(at(11))], state, grace=dt.timedelta(hours=1))
        with pytest.raises(InvalidRollupInput, match="milliseconds"):
            run([], grace=dt.timedelta(microseconds=1500))


# --- clock ticks and operators ------------------------------------------------------------------


class TestTicksAndOperators:
    def test_ticks_close_idle_hours(self) -> None:
        chain = Chain()
        e1 = chain.cdr(at(10, 5))
        step = run([e1, ClockTick(OP, at(13, 0)), ClockTick(OP, at(16, 30))])
        assert [(c.hour_start, c.closed_by) for c in step.closed] == [
            (hour(10), "tick"), (hour(11), "tick"), (hour(12), "tick"), (hour(13), "tick"),
        ]
        assert {(c.chain_head_seq, c.chain_head_hash) for c in step.closed} == {(1, e1[1])}
        assert step.new_state.watermark == at(16, 30)

    def test_tick_at_or_before_the_watermark_changes_nothing(self) -> None:
        chain = Chain()
        state = run([chain.cdr(at(10, 5)), chain.cdr(at(12, 30))]).new_state
        for when in (at(12, 30), at(12, 0), at(9)):
            step = run([ClockTick(OP, when)], state)
            assert step.new_state == state and step.closed == ()

    def test_tick_without_events_closes_nothing_and_later_events_start_the_range(self) -> None:
        chain = Chain()
        step = run([ClockTick(OP, at(15)), chain.cdr(at(10, 30)), chain.cdr(at(14, 10))])
        # 10:00 closes as soon as its first event arrives (the clock is past 13:00); not from epoch.
        assert [(c.hour_start, c.closed_by) for c in step.closed] == [(hour(10), "event"), (hour(11), "event"),
                                                                       (hour(12), "event")]
        assert step.late_events == 0

    def test_items_of_another_operator_are_refused(self) -> None:
        with pytest.raises(InvalidRollupInput, match="op-b"):
            run([ClockTick("op-b", at(10))])
        with pytest.raises(InvalidRollupInput, match="op-b"):
            run([Chain("op-b").cdr(at(10))])

    def test_many_operators_in_one_sequence_keep_separate_states(self) -> None:
        a, b = Chain("op-a"), Chain("op-b")
        mixed = [a.cdr(at(10, 1)), b.cdr(at(10, 2)), b.cdr(at(10, 3), "EXPIRED"), ClockTick("op-b", at(11)),
                 a.cdr(at(11, 30)), b.cdr(at(12, 59)), a.cdr(at(13, 0)), b.cdr(at(9, 0)),
                 ClockTick("op-a", at(14)), b.cdr(at(14, 1)), a.cdr(at(10, 50))]

        def operator_of(item: Any) -> str:
            return item.operator_id if isinstance(item, ClockTick) else item[0]["operator_id"]

        states = {op: OperatorRollupState.initial(op) for op in ("op-a", "op-b")}
        closed: dict[str, list[RollupClosed]] = {"op-a": [], "op-b": []}
        for item in mixed:  # one item at a time, interleaved, as in one partition
            op = operator_of(item)
            step = apply_entries(states[op], [item])
            states[op] = step.new_state
            closed[op].extend(step.closed)
        for op in states:
            alone = run([i for i in mixed if operator_of(i) == op], OperatorRollupState.initial(op))
            assert alone.new_state == states[op] and list(alone.closed) == closed[op]
        assert {c.rollup.currency for c in closed["op-a"]} == {"EUR"}
        assert {c.rollup.currency for c in closed["op-b"]} == {"USD"}
        assert states["op-a"].last_chain_seq == 4 and states["op-b"].last_chain_seq == 5


# --- validation and serialisation ---------------------------------------------------------------


class TestValidation:
    def test_a_second_currency_is_an_error(self) -> None:
        chain = Chain()
        state = run([chain.cdr(at(10))]).new_state
        with pytest.raises(CurrencyMismatch) as info:
            run([chain.cdr(at(10, 5), currency="USD")], state)
        assert (info.value.expected, info.value.found, info.value.chain_seq) == ("EUR", "USD", 2)

    @pytest.mark.parametrize("text", [
        "2026-04-10T10:15:03Z", "2026-04-10T10:15:03.456+00:00", "2026-04-10 10:15:03.456Z",
        "2026-13-10T10:15:03.456Z", "2026-04-10T24:15:03.456Z", "2026-04-10T10:60:03.456Z",
        "２026-04-10T10:15:03.456Z", 1712744103456,
    ])
    def test_timestamps_outside_the_format_utc_shape_are_refused(self, text: Any) -> None:
        with pytest.raises(InvalidRollupInput):
            hour_of(text)
        chain = Chain()
        entry, digest = chain.cdr(at(10))
        with pytest.raises(InvalidRollupInput):
            run([({**entry, "done_at": text}, digest)])
        with pytest.raises(InvalidRollupInput):
            run([ClockTick(OP, text)])

    def test_non_integer_amounts_are_refused(self) -> None:
        entry, digest = Chain().cdr(at(10))
        with pytest.raises(InvalidRollupInput, match="integers"):
            run([({**entry, "amount_minor": 5.0}, digest)])


def walk_json_types(value: Any) -> set[type]:
    if isinstance(value, dict):
        assert all(type(k) is str for k in value)
        return {dict}.union(*(walk_json_types(v) for v in value.values()))
    if isinstance(value, list):
        return {list}.union(*(walk_json_types(v) for v in value))
    return {type(value)}


class TestSerialisation:
    def test_state_round_trips_through_json_and_continues_identically(self) -> None:
        items = day_stream()
        cut = 12
        step = run(items[:cut])
        state = step.new_state
        assert state.open_hours and state.pending_corrections and state.revisions
        raw = json.dumps(state.to_dict())
        assert walk_json_types(state.to_dict()) <= {dict, list, str, int, bool, type(None)}
        restored = OperatorRollupState.from_dict(json.loads(raw))
        assert restored == state and json.dumps(restored.to_dict()) == raw
        assert run(items[cut:], restored) == run(items[cut:], state)

    def test_closes_and_ticks_round_trip(self) -> None:
        step = run(day_stream())
        for close in step.closed:
            raw = json.dumps(close.to_dict())
            assert RollupClosed.from_dict(json.loads(raw)) == close
        tick = ClockTick(OP, at(10))
        assert ClockTick.from_dict(json.loads(json.dumps(tick.to_dict()))) == tick

    def test_serialisation_is_deterministic(self) -> None:
        one, two = run(day_stream()), run(day_stream())
        assert json.dumps(one.new_state.to_dict()) == json.dumps(two.new_state.to_dict())
        assert [json.dumps(c.to_dict()) for c in one.closed] == [json.dumps(c.to_dict()) for c in two.closed]


# --- reconciliation -----------------------------------------------------------------------------


class TestReconciliation:
    def test_base_plus_corrections_equals_the_recomputation(self) -> None:
        items = day_stream() + [ClockTick(OP, at(23, 59))]
        step = run(items)
        assert step.new_state.pending_corrections == {} and step.new_state.open_hours == {}
        assert any(c.revision > 0 for c in step.closed)
        entries = [e for e in items if not isinstance(e, ClockTick)]
        recomputed = recompute_rollups([{**item[0], "record_hash": item[1]} for item in entries],
                                       end_hour=step.new_state.closed_through)
        assert rollups_from_closes(step.closed) == recomputed
        assert diff_rollups(recomputed, rollups_from_closes(step.closed)) == []

    def test_recompute_with_grace_matches_the_closes_of_a_stream_without_ticks(self) -> None:
        chain = Chain()
        items = [chain.cdr(at(h, m)) for h in (8, 9, 11, 12, 14) for m in (5, 40)]
        step = run(items)
        recomputed = recompute_rollups([item[0] for item in items], DEFAULT_GRACE)
        assert list(recomputed) == [hour(h) for h in range(8, 12)]
        assert rollups_from_closes(step.closed) == recomputed

    def test_recompute_ignores_repeated_entries_and_refuses_conflicting_ones(self) -> None:
        chain = Chain()
        items = [chain.cdr(at(10, 1)), chain.cdr(at(10, 2))]
        entries = [e for e, _ in items]
        assert recompute_rollups(entries + entries[:1]) == recompute_rollups(entries)
        with pytest.raises(InvalidRollupInput):
            recompute_rollups(entries + [{**entries[0], "segments": 2}])

    def test_recompute_covers_an_explicit_range_with_empty_hours(self) -> None:
        result = recompute_rollups([], start_hour=hour(0), end_hour=hour(23), operator_id=OP, currency="EUR")
        assert list(result) == [hour(h) for h in range(24)]
        assert all(r == HourRollup.empty(OP, h, "EUR") for h, r in result.items())

    def test_merge_refuses_a_revision_twice_and_other_hours(self) -> None:
        step = run(day_stream() + [ClockTick(OP, at(23))])
        base = step.closed[0]
        with pytest.raises(InvalidRollupInput, match="twice"):
            merge([base, base])
        with pytest.raises(InvalidRollupInput):
            merge([base.rollup, step.closed[-1].rollup])
        assert rollups_from_closes(list(step.closed) * 2) == rollups_from_closes(step.closed)


FIELD_CHANGES: dict[str, dict[str, Any]] = {
    **{f"counts.{s}": {"counts": s} for s in STATUSES},
    **{f"adjustments.{k}": {"adjustments": k} for k in ADJUSTMENT_TYPES},
    "operator_id": {"operator_id": "op-x"},
    "currency": {"currency": "USD"},
    "records": {"records": 99},
    "billable_records": {"billable_records": 99},
    "billable_segments": {"billable_segments": 99},
    "amount_minor": {"amount_minor": 99},
    "tax_minor": {"tax_minor": 99},
    "first_chain_seq": {"first_chain_seq": 99},
    "last_chain_seq": {"last_chain_seq": 99},
}


class TestDiff:
    @pytest.mark.parametrize("field", sorted(FIELD_CHANGES))
    def test_each_altered_field_is_reported(self, field: str) -> None:
        step = run(day_stream() + [ClockTick(OP, at(23))])
        expected = rollups_from_closes(step.closed)
        target = hour(10)
        original = expected[target]
        (name, change), = FIELD_CHANGES[field].items()
        if name in ("counts", "adjustments"):
            altered = dict(getattr(original, name))
            altered[change] += 1
            change = altered
        found = dict(expected)
        found[target] = dataclasses.replace(original, **{name: change})
        (difference,) = diff_rollups(expected, found)
        assert (difference.hour_start, difference.field) == (target, field)
        assert difference.expected != difference.found

    def test_missing_and_extra_hours_are_reported(self) -> None:
        step = run(day_stream() + [ClockTick(OP, at(23))])
        expected = rollups_from_closes(step.closed)
        found = dict(expected)
        del found[hour(11)]
        found[hour(23)] = HourRollup.empty(OP, hour(23), "EUR")
        assert [d.to_dict() for d in diff_rollups(expected, found)] == [
            {"hour_start": hour(11), "field": "presence", "expected": "present", "found": "absent"},
            {"hour_start": hour(23), "field": "presence", "expected": "absent", "found": "present"},
        ]


# --- properties ---------------------------------------------------------------------------------

CDR_OP = st.tuples(st.just("cdr"), st.integers(0, 40), st.integers(-300, 0), st.sampled_from(STATUSES),
                   st.integers(1, 3), st.integers(0, 59_999))
TICK_OP = st.tuples(st.just("tick"), st.integers(-60, 200))
DUP_OP = st.tuples(st.just("dup"), st.integers(1, 30), st.integers(1, 10))
VOID_OP = st.tuples(st.just("void"), st.integers(0, 1000))
PLANS = st.lists(st.one_of(CDR_OP, CDR_OP, CDR_OP, TICK_OP, DUP_OP, VOID_OP), min_size=1, max_size=45)


def build_stream(plan: list[tuple]) -> list:
    """A real chain from a plan: events around a moving cursor, some beyond the grace, ticks,
    re-emitted ranges (as after an upstream crash) and VOIDs of earlier CDRs."""
    chain = Chain()
    items: list = []
    originals: list[dict] = []
    cursor = T0
    for op in plan:
        if op[0] == "cdr":
            _, advance, offset, status, segments, ms = op
            cursor += dt.timedelta(minutes=advance)
            done = cursor + dt.timedelta(minutes=offset, milliseconds=ms)
            item = chain.cdr(format_utc(done), status, segments)
            originals.append(item[0])
            items.append(item)
        elif op[0] == "tick":
            items.append(ClockTick(OP, format_utc(cursor + dt.timedelta(minutes=op[1]))))
        elif op[0] == "dup" and items:
            start = max(0, len(items) - op[1])
            items.extend(items[start:start + op[2]])
        elif op[0] == "void" and originals:
            # Only a record in force can be voided (the ingest refuses a second VOID).
            items.append(chain.adjustment("VOID", originals.pop(op[1] % len(originals))))
    return items


PROPERTY_SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class TestProperties:
    @PROPERTY_SETTINGS
    @given(plan=PLANS, cuts=st.lists(st.integers(0, 200), max_size=8))
    def test_any_slicing_gives_the_same_state_and_closes(self, plan: list, cuts: list[int]) -> None:
        items = build_stream(plan)
        whole = run(items)
        state, closed, counters = run_sliced(items, [c % (len(items) + 1) for c in cuts])
        assert state == whole.new_state
        assert closed == list(whole.closed)
        assert counters == (whole.duplicates, whole.late_events, whole.applied)

    @PROPERTY_SETTINGS
    @given(plan=PLANS, prefix=st.integers(0, 1000))
    def test_reapplying_a_prefix_changes_nothing(self, plan: list, prefix: int) -> None:
        items = build_stream(plan)
        prefix %= len(items) + 1
        partial = run(items[:prefix])
        replay = run(items[:prefix], partial.new_state)
        assert replay.new_state == partial.new_state and replay.closed == () and replay.applied == 0
        final = run(items).new_state
        assert run(items[:prefix], final).new_state == final

    @PROPERTY_SETTINGS
    @given(plan=PLANS)
    def test_every_entry_is_accounted_and_closes_match_the_recomputation(self, plan: list) -> None:
        items = build_stream(plan)
        entries = {i[0]["chain_seq"]: i[0] for i in items if not isinstance(i, ClockTick)}
        flushed = run(items + [ClockTick(OP, format_utc(T0 + dt.timedelta(days=3)))])
        state = flushed.new_state
        assert flushed.applied == len(entries)
        assert state.open_hours == {} and state.pending_corrections == {}
        keys = [c.key for c in flushed.closed]
        assert len(keys) == len(set(keys))  # each (hour, revision) emitted once
        regular = [c.hour_start for c in flushed.closed if c.revision == 0]
        assert len(regular) == len(set(regular))
        merged = rollups_from_closes(flushed.closed)
        assert merged == recompute_rollups(entries.values(), end_hour=state.closed_through)
        # Every original is in force unless voided; a VOID is an entry that takes one out.
        voids = sum(r.adjustments["VOID"] for r in merged.values())
        assert sum(r.records for r in merged.values()) + 2 * voids == len(entries)
        assert list(merged) == sorted(merged) and state.first_hour == min(merged, default=None)


def test_the_furthest_rollup_state_wins_whatever_order_states_arrive_in():
    from cdr_mediation.domain.source_position import StateConflict
    from cdr_mediation.domain.source_position import furthest as furthest_rollup_state

    older = OperatorRollupState(OP, last_chain_seq=10, applied_offset=3)
    newer = OperatorRollupState(OP, last_chain_seq=25, applied_offset=8)
    assert furthest_rollup_state(older, newer) is newer
    assert furthest_rollup_state(newer, older) is newer
    assert furthest_rollup_state(None, older) is older
    with pytest.raises(StateConflict, match="offset 8"):
        furthest_rollup_state(newer, OperatorRollupState(OP, last_chain_seq=26, applied_offset=8))
