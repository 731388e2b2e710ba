"""The pure ingest step: dedup, chain and state guarded so that re-processing changes nothing.

`World` plays the agent around `apply_batch` with dict "tables" and idempotent sinks that fail
the test if a re-emission differs from what they already hold (a doubled or shifted chain_seq
would). A crash is the agent stopping between two of its effects; recovery runs the same batch
record again from whatever the tables then hold, as Faust's at-least-once delivery does.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdr_mediation.codecs.canonical_json import canonical_bytes
from cdr_mediation.domain.chain import verify_chain
from cdr_mediation.domain.ingest import (
    BatchOutcome,
    DeadLetter,
    DedupEntry,
    OperatorIngestState,
    apply_batch,
    dedup_key,
)
from cdr_mediation.domain.pricing import PricingSnapshot, load_snapshot
from cdr_mediation.domain.source_position import StateConflict, resume_offset
from cdr_mediation.domain.source_position import furthest as furthest_state

from .domain_samples import PRICING_DOC, dlr_doc

OP = "op-a"


def dlr(n: int, **changes: Any) -> bytes:
    return json.dumps(dlr_doc(dlr_id=f"dlr-{n:05d}", message_id=f"msg-{n}", **changes)).encode()


class Crash(Exception):
    pass


@dataclasses.dataclass
class World:
    pricing: PricingSnapshot
    state: dict[str, OperatorIngestState] = dataclasses.field(default_factory=dict)
    dedup: dict[str, DedupEntry] = dataclasses.field(default_factory=dict)
    # Idempotent sinks: CDRs by (operator, chain_seq), dead letters by their source position.
    cdrs: dict[tuple[str, int], tuple[str, str, bytes]] = dataclasses.field(default_factory=dict)
    dead: dict[tuple[str, int, int], DeadLetter] = dataclasses.field(default_factory=dict)
    emissions: int = 0

    def run(
        self, offset: int, batch: list[bytes], operator_id: str = OP, crash_after: str | None = None
    ) -> BatchOutcome:
        state = self.state.get(operator_id) or OperatorIngestState.initial(operator_id)
        outcome = apply_batch(
            state, batch, offset, self.pricing,
            lambda dlr_id: self.dedup.get(dedup_key(operator_id, dlr_id)),
        )
        if outcome.already_applied:
            return outcome
        for cdr, digest in outcome.cdrs:  # 1. emit
            self.emissions += 1
            row = (cdr.cdr_id, digest, canonical_bytes(cdr.to_entry()))
            assert self.cdrs.setdefault((operator_id, cdr.chain_seq), row) == row
        for letter in outcome.dead_letters:
            key = (letter.operator_id, letter.source_offset, letter.batch_index)
            assert self.dead.setdefault(key, letter) == letter
        if crash_after == "emit":
            raise Crash
        for dlr_id, entry in outcome.dedup_writes.items():  # 2. dedup
            self.dedup[dedup_key(operator_id, dlr_id)] = entry
        if crash_after == "dedup":
            raise Crash
        self.state[operator_id] = outcome.new_state  # 3. state
        if crash_after == "state":
            raise Crash  # before the consumer commits its offset: the record comes again
        return outcome

    def chain_rows(self, operator_id: str = OP) -> list[dict[str, Any]]:
        rows = []
        for (op, _seq), (_cdr_id, digest, raw) in sorted(self.cdrs.items()):
            if op == operator_id:
                rows.append({**json.loads(raw), "record_hash": digest})
        return rows


@pytest.fixture
def world(pricing: PricingSnapshot) -> World:
    return World(pricing)


BATCHES = [
    [dlr(1), dlr(2, status="EXPIRED"), dlr(3, segments=3)],
    [dlr(4), dlr(2, status="EXPIRED"), b"{not json", dlr(5, operator_id="op-late"), dlr(6)],
    [dlr(7), dlr(8, tenant_id="tenant-7"), dlr(7)],
]
OFFSETS = [10, 11, 14]  # other operators' records sit in between in the partition


def clean_run(pricing: PricingSnapshot) -> World:
    world = World(pricing)
    for offset, batch in zip(OFFSETS, BATCHES, strict=True):
        world.run(offset, batch)
    return world


class TestHappyPath:
    def test_batch_becomes_a_gapless_verifiable_chain(self, world: World) -> None:
        outcome = world.run(0, [dlr(1), dlr(2), dlr(3)])
        assert [c.cdr.chain_seq for c in outcome.cdrs] == [1, 2, 3]
        assert outcome.new_state == OperatorIngestState(OP, 3, outcome.cdrs[-1].record_hash, 0)
        result = verify_chain(OP, world.chain_rows())
        assert result.ok and result.head == outcome.new_state.head

    def test_dedup_entries_remember_source_offset_cdr_and_seq(self, world: World) -> None:
        outcome = world.run(42, [dlr(1), dlr(2)])
        entry = outcome.dedup_writes["dlr-00002"]
        assert (entry.source_offset, entry.cdr_id, entry.chain_seq) == (
            42, outcome.cdrs[1].cdr.cdr_id, 2,
        )
        assert list(outcome.dedup_writes) == ["dlr-00001", "dlr-00002"]

    def test_chain_continues_across_batches(self, world: World) -> None:
        first = world.run(0, [dlr(1), dlr(2)])
        second = world.run(1, [dlr(3)])
        assert second.cdrs[0].cdr.chain_seq == 3
        assert second.cdrs[0].cdr.prev_hash == first.new_state.head_hash

    def test_empty_batch_still_records_its_offset(self, world: World) -> None:
        outcome = world.run(5, [])
        assert outcome.new_state == OperatorIngestState(OP, 0, "0" * 64, 5)

    def test_same_inputs_give_equal_outcomes(self, pricing: PricingSnapshot) -> None:
        state = OperatorIngestState.initial(OP)
        batch = [dlr(1), dlr(2), b"[]", dlr(1)]
        a = apply_batch(state, batch, 3, pricing, lambda _: None)
        b = apply_batch(state, list(batch), 3, pricing, lambda _: None)
        assert a == b


class TestAlreadyApplied:
    def test_same_or_older_offset_is_a_no_op(self, world: World) -> None:
        world.run(7, [dlr(1)])
        before = copy.deepcopy((world.state, world.dedup, world.cdrs, world.emissions))
        for offset in (7, 6, 0):
            outcome = world.run(offset, [dlr(1), dlr(2)])
            assert outcome.already_applied
            assert (outcome.cdrs, outcome.dead_letters, dict(outcome.dedup_writes)) == ((), (), {})
        assert (world.state, world.dedup, world.cdrs, world.emissions) == before


class TestCrashRecovery:
    @pytest.mark.parametrize("crash_after", ["emit", "dedup", "state"])
    @pytest.mark.parametrize("crashed_batch", [0, 1, 2])
    def test_rerun_after_a_crash_at_any_step_changes_nothing(
        self, pricing: PricingSnapshot, crash_after: str, crashed_batch: int
    ) -> None:
        world = World(pricing)
        for number, (offset, batch) in enumerate(zip(OFFSETS, BATCHES, strict=True)):
            if number == crashed_batch:
                with pytest.raises(Crash):
                    world.run(offset, batch, crash_after=crash_after)
            world.run(offset, batch)  # redelivered after the crash (or delivered normally)
        clean = clean_run(pricing)
        assert (world.state, world.dedup, world.cdrs, world.dead) == (
            clean.state, clean.dedup, clean.cdrs, clean.dead,
        )
        seqs = [seq for (_op, seq) in world.cdrs]
        assert seqs == list(range(1, len(seqs) + 1))  # never doubled, never skipped
        assert verify_chain(OP, world.chain_rows()).ok

    def test_repeated_crashes_on_the_same_batch(self, pricing: PricingSnapshot) -> None:
        world = World(pricing)
        world.run(OFFSETS[0], BATCHES[0])
        for step in ("emit", "dedup", "emit", "state"):
            with pytest.raises(Crash):
                world.run(OFFSETS[1], BATCHES[1], crash_after=step)
        world.run(OFFSETS[1], BATCHES[1])
        world.run(OFFSETS[2], BATCHES[2])
        clean = clean_run(pricing)
        assert (world.state, world.cdrs) == (clean.state, clean.cdrs)

    def test_dedup_entries_of_batches_whose_state_was_lost_are_ignored(
        self, pricing: PricingSnapshot
    ) -> None:
        # All three batches ran, but the state writes of the last two were lost while their
        # dedup writes survived (e.g. a restore from a changelog that was behind).
        world = clean_run(pricing)
        reference = copy.deepcopy(world)
        world.state[OP] = World(pricing).run(OFFSETS[0], BATCHES[0]).new_state
        for offset, batch in zip(OFFSETS[1:], BATCHES[1:], strict=True):
            outcome = world.run(offset, batch)
            assert not outcome.already_applied
        assert (world.state, world.dedup, world.cdrs) == (
            reference.state, reference.dedup, reference.cdrs,
        )

    def test_orphan_entry_for_a_dlr_first_seen_in_a_later_batch(
        self, pricing: PricingSnapshot
    ) -> None:
        world = World(pricing)
        world.run(1, [dlr(1)])
        world.dedup[dedup_key(OP, "dlr-00002")] = DedupEntry(9, "stale", 99, "0" * 64)
        outcome = world.run(2, [dlr(2)])  # written by a crashed attempt at offset 9: not seen
        assert [c.cdr.dlr_id for c in outcome.cdrs] == ["dlr-00002"]
        assert outcome.duplicates == 0


class TestDedup:
    def test_redelivery_in_a_later_batch_is_dropped(self, world: World) -> None:
        world.run(0, [dlr(1), dlr(2)])
        outcome = world.run(1, [dlr(2), dlr(3), dlr(1)])
        assert [c.cdr.dlr_id for c in outcome.cdrs] == ["dlr-00003"]
        assert outcome.duplicates == 2
        assert outcome.cdrs[0].cdr.chain_seq == 3
        assert list(outcome.dedup_writes) == ["dlr-00003"]

    def test_repeat_inside_one_batch_is_a_duplicate_of_the_first(self, world: World) -> None:
        outcome = world.run(0, [dlr(1), dlr(2), dlr(1), dlr(1)])
        assert [c.cdr.dlr_id for c in outcome.cdrs] == ["dlr-00001", "dlr-00002"]
        assert outcome.duplicates == 2

    def test_redelivery_serialised_differently_is_still_a_duplicate(self, world: World) -> None:
        world.run(0, [dlr(1)])
        doc = dlr_doc(dlr_id="dlr-00001", message_id="msg-1",
                      done_at="2026-04-10T12:15:03.456+02:00", x_attempt=2)
        outcome = world.run(1, [json.dumps(doc, indent=1, sort_keys=True).encode()])
        assert (outcome.cdrs, outcome.dead_letters, outcome.duplicates) == ((), (), 1)

    @pytest.mark.parametrize("same_batch", [True, False])
    def test_reused_dlr_id_with_other_content_is_dead_lettered(
        self, world: World, same_batch: bool
    ) -> None:
        reused = dlr(1, status="UNDELIVERED")
        if same_batch:
            outcome = world.run(0, [dlr(1), reused])
        else:
            world.run(0, [dlr(1)])
            outcome = world.run(1, [reused])
        (letter,) = outcome.dead_letters
        assert (letter.reason_code, letter.original) == ("dlr_id_reused", reused)
        assert "chain_seq 1" in letter.detail
        assert outcome.duplicates == 0

    def test_dedup_is_scoped_to_the_operator(self, world: World) -> None:
        world.run(0, [dlr(1)], operator_id=OP)
        outcome = world.run(1, [dlr(1, operator_id="op-b")], operator_id="op-b")
        assert len(outcome.cdrs) == 1 and outcome.cdrs[0].cdr.chain_seq == 1


class TestDeadLetters:
    def test_invalid_dlr_keeps_its_bytes_and_reason_and_leaves_no_gap(self, world: World) -> None:
        bad = dlr(2, msisdn="12345")
        outcome = world.run(3, [dlr(1), bad, dlr(3)])
        assert [c.cdr.chain_seq for c in outcome.cdrs] == [1, 2]
        (letter,) = outcome.dead_letters
        assert letter == DeadLetter(bad, "invalid_msisdn", letter.detail, OP, 3, 1)
        assert "dlr-00002" not in outcome.dedup_writes

    def test_unparseable_bytes_are_kept_verbatim(self, world: World) -> None:
        raw = b"\xff\x00garbage"
        (letter,) = world.run(0, [raw]).dead_letters
        assert (letter.original, letter.reason_code) == (raw, "invalid_encoding")

    def test_operator_mismatch(self, world: World) -> None:
        (letter,) = world.run(0, [dlr(1, operator_id="op-b")]).dead_letters
        assert letter.reason_code == "subject_operator_mismatch"

    def test_unpriced_dlr_can_be_replayed_once_pricing_is_fixed(self, world: World) -> None:
        raw = dlr(1, operator_id="op-new")
        state = OperatorIngestState.initial("op-new")
        first = apply_batch(state, [raw], 0, world.pricing, lambda _: None)
        (letter,) = first.dead_letters
        assert letter.reason_code == "no_price_for_operator"
        assert dict(first.dedup_writes) == {}  # nothing would block the replay

        fixed = copy.deepcopy(PRICING_DOC)
        fixed["operators"]["op-new"] = {"currency": "EUR", "rates": [
            {"rate_id": "op-new/1", "effective_from": "2026-01-01T00:00:00Z",
             "unit_price_minor": 2, "tax_rate_bp": 0}]}
        replay = apply_batch(first.new_state, [letter.original], 9,
                             load_snapshot(json.dumps(fixed).encode()), lambda _: None)
        assert [c.cdr.pricing_version for c in replay.cdrs] == ["op-new/1"]
        assert replay.cdrs[0].cdr.chain_seq == 1

    def test_outcome_of_a_fully_rejected_batch_still_advances_the_offset(
        self, world: World
    ) -> None:
        outcome = world.run(4, [b"{}", b"[]"])
        assert outcome.new_state.applied_offset == 4 and outcome.new_state.chain_seq == 0
        assert world.run(4, [b"{}", b"[]"]).already_applied


class TestBatchBoundaries:
    @settings(max_examples=100, deadline=None)
    @given(
        picks=st.lists(st.integers(0, 11), min_size=1, max_size=30),
        cuts=st.sets(st.integers(1, 29)),
    )
    def test_any_split_of_the_same_stream_gives_the_same_chain(
        self, pricing: PricingSnapshot, picks: list[int], cuts: set[int]
    ) -> None:
        catalogue = [dlr(n) for n in range(8)] + [
            dlr(8, operator_id="op-late"),  # no price
            b"not json",
            dlr(9, segments=0),  # invalid
            dlr(3, status="REJECTED"),  # reuses dlr-00003's id
        ]
        stream = [catalogue[i] for i in picks]
        one = World(pricing)
        one.run(0, stream)
        bounds = [0, *sorted(c for c in cuts if c < len(stream)), len(stream)]
        many = World(pricing)
        for offset, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False)):
            many.run(offset, stream[lo:hi])
        assert many.cdrs == one.cdrs
        assert many.state[OP].head == one.state[OP].head
        reasons: Callable[[World], list[str]] = lambda w: [
            letter.reason_code for _, letter in sorted(w.dead.items())
        ]
        assert reasons(many) == reasons(one)


class TestSerialisedState:
    def test_state_and_dedup_entry_round_trip_through_plain_dicts(self, world: World) -> None:
        outcome = world.run(1, [dlr(1)])
        state = outcome.new_state
        assert OperatorIngestState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
        entry = outcome.dedup_writes["dlr-00001"]
        assert DedupEntry.from_dict(json.loads(json.dumps(entry.to_dict()))) == entry

    def test_dedup_key_is_operator_scoped_and_unambiguous(self) -> None:
        assert dedup_key("op-a", "x/y") == "op-a/x/y"
        assert dedup_key("op-a", "x") != dedup_key("op-b", "x")


# --- Resuming a partition: the table decides where, and a late stale state never wins ---------

# One DLR partition holding two operators' batch records, interleaved as the bridge writes them.
PARTITION_LOG = [(offset, "op-a" if offset % 3 else "op-b",
                  [dlr(100 * offset + i, operator_id="op-a" if offset % 3 else "op-b") for i in range(4)])
                 for offset in range(12)]


def _process(world: World, records) -> None:
    for offset, operator_id, batch in records:
        world.run(offset, batch, operator_id=operator_id)


def test_resume_offset_is_after_the_last_record_any_state_reflects():
    assert resume_offset([]) == 0
    states = [OperatorIngestState("op-a", 9, "a" * 64, 10), OperatorIngestState("op-b", 4, "b" * 64, 6)]
    assert resume_offset(state.applied_offset for state in states) == 11


def test_resuming_from_the_table_after_a_stale_restore_rebuilds_the_same_chains(pricing: PricingSnapshot):
    uninterrupted = World(pricing)
    _process(uninterrupted, PARTITION_LOG)

    # The worker that ran the first eight records died; the table it left (restored from a
    # changelog that stops after record 4) is older than the committed offset (8).
    crashed = World(pricing)
    _process(crashed, PARTITION_LOG[:5])
    restored = World(pricing, state=dict(crashed.state), dedup=dict(crashed.dedup))
    restored.cdrs = dict(uninterrupted.cdrs)  # what the dead worker already emitted stays emitted
    start = resume_offset(state.applied_offset for state in restored.state.values())
    assert start == 5
    _process(restored, PARTITION_LOG[start:])  # the sinks fail the test on any other content
    assert restored.state == uninterrupted.state


def test_resuming_from_the_committed_offset_after_a_stale_restore_forks_the_chain(pricing: PricingSnapshot):
    """Why the committed offset must not decide: the same situation, resumed at 8, re-uses
    chain positions the dead worker already filled with other records."""
    uninterrupted = World(pricing)
    _process(uninterrupted, PARTITION_LOG)
    crashed = World(pricing)
    _process(crashed, PARTITION_LOG[:5])
    restored = World(pricing, state=dict(crashed.state), dedup=dict(crashed.dedup))
    restored.cdrs = dict(uninterrupted.cdrs)
    with pytest.raises(AssertionError):  # a CDR at an occupied (operator, chain_seq) with other content
        _process(restored, PARTITION_LOG[8:])


@given(st.permutations(range(6)))
@settings(max_examples=100)
def test_the_furthest_state_wins_in_any_arrival_order(order):
    path = [OperatorIngestState("op-a", seq * 3, f"{seq:064x}", seq * 2) for seq in range(6)]
    held = None
    for index in order:
        held = furthest_state(held, path[index])
    assert held == path[-1]


def test_two_states_at_one_offset_with_different_heads_are_a_conflict():
    held = OperatorIngestState("op-a", 7, "a" * 64, 12)
    assert furthest_state(held, dataclasses.replace(held)) == held
    with pytest.raises(StateConflict, match="source offset 12"):
        furthest_state(held, dataclasses.replace(held, head_hash="b" * 64))
