"""Adjustments (VOID / CORRECT): the request's own rules, the chain's rules in the ingest step,
their effect on the chain, on rollups and on which export file carries them.

`Ledger` plays the ingest agent around `apply_batch` / `apply_adjustment` with a dict table and
an idempotent CDR sink (as tests/unit/domain/test_ingest.py does), so each test drives real DLRs
into a real chain and then adjusts it the way the portal's requests would.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from cdr_mediation.codecs.records import decode_adjustment, decode_cdr_entries, encode_adjustment, encode_adjustment_entry
from cdr_mediation.domain.adjustment import (
    CORRECTABLE_FIELDS,
    AdjustmentBody,
    AdjustmentKind,
    AdjustmentRefused,
    AdjustmentRequest,
    ChainRefusal,
    RefusalCode,
    adjustment_cdr_id,
    adjustment_id_for,
    parse_body,
    parse_idempotency_key,
    request_for,
)
from cdr_mediation.domain.chain import verify_chain
from cdr_mediation.domain.file_scope import FileScope, file_scope
from cdr_mediation.domain.ingest import (
    OperatorIngestState,
    adjusted_key,
    applied_adjustment_key,
    apply_adjustment,
    apply_batch,
    dedup_key,
)
from cdr_mediation.domain.pricing import PricingSnapshot
from cdr_mediation.domain.rollup import OperatorRollupState, apply_entries, merge, recompute_rollups

from .domain_samples import dlr_doc

OP = "op-a"


def dlr(n: int, **changes: Any) -> bytes:
    return json.dumps(dlr_doc(dlr_id=f"dlr-{n:05d}", message_id=f"msg-{n}", **changes)).encode()


@dataclasses.dataclass
class Ledger:
    """The ingest agent in miniature: one operator, a table, an idempotent CDR-topic sink."""

    pricing: PricingSnapshot
    state: OperatorIngestState = dataclasses.field(default_factory=lambda: OperatorIngestState.initial(OP))
    table: dict[str, dict] = dataclasses.field(default_factory=dict)
    topic: list[tuple] = dataclasses.field(default_factory=list)  # items as the CDR topic carries them
    dead: list = dataclasses.field(default_factory=list)
    offset: int = 0

    def dlrs(self, *raws: bytes) -> None:
        self.offset += 1
        outcome = apply_batch(self.state, list(raws), self.offset, self.pricing,
                              lambda dlr_id: _dedup(self.table.get(dedup_key(OP, dlr_id))))
        self.topic += [(entry, linked.record_hash) for entry, linked in zip(outcome.entries, outcome.cdrs)]
        for dlr_id, entry in outcome.dedup_writes.items():
            self.table[dedup_key(OP, dlr_id)] = entry.to_dict()
        self.state = outcome.new_state

    def adjust(self, request: AdjustmentRequest | bytes, *, offset: int | None = None):
        """Apply one adjustment record (a request, or raw bytes as they sit in the DLR log)."""
        raw = request if isinstance(request, bytes) else encode_adjustment(request)
        try:
            decoded = decode_adjustment(raw)
        except AdjustmentRefused as exc:
            decoded = exc
        if offset is None:
            self.offset += 1
            offset = self.offset
        outcome = apply_adjustment(self.state, decoded, raw, offset, self.table.get)
        if outcome.linked is not None:
            # What travels on the CDR topic, decoded as the store and the rollups decode it.
            record = encode_adjustment_entry(outcome.entry, outcome.linked.record_hash, dict(outcome.supersedes))
            self.topic += decode_cdr_entries(record)
        if outcome.refused is not None:
            self.dead.append(outcome.refused)
        self.table.update(outcome.table_writes)
        self.state = outcome.new_state
        return outcome

    def entry(self, cdr_id: str) -> tuple[dict, str]:
        (found,) = [(item[0], item[1]) for item in self.topic if item[0]["cdr_id"] == cdr_id]
        return found

    def in_force(self, original_cdr_id: str) -> tuple[dict, str]:
        versions = [(item[0], item[1]) for item in self.topic
                    if item[0]["cdr_id"] == original_cdr_id or item[0]["ref_cdr_id"] == original_cdr_id]
        return versions[-1]

    def request(self, kind: str, original_cdr_id: str, *, key: str, corrected: dict | None = None,
                current: tuple[dict, str] | None = None, actor: str = "alice") -> AdjustmentRequest:
        entry, digest = current or self.in_force(original_cdr_id)
        body = AdjustmentBody(AdjustmentKind(kind), original_cdr_id, "TICKET-1", corrected)
        return request_for(body, adjustment_id=adjustment_id_for(key), actor=actor, current=entry,
                           current_hash=digest)


def _dedup(value):
    from cdr_mediation.domain.ingest import DedupEntry

    return None if value is None else DedupEntry.from_dict(value)


def corrected_from(entry: dict, **changes: Any) -> dict:
    return {**{name: entry[name] for name in CORRECTABLE_FIELDS}, **changes}


@pytest.fixture
def ledger(pricing: PricingSnapshot) -> Ledger:
    book = Ledger(pricing)
    book.dlrs(dlr(1), dlr(2, status="EXPIRED"), dlr(3, segments=3))
    return book


def first_cdr(ledger: Ledger, n: int = 0) -> dict:
    return [item[0] for item in ledger.topic if item[0]["record_type"] == "CDR"][n]


# --- the request on its own ----------------------------------------------------------------------


class TestRequest:
    def test_a_void_becomes_an_entry_repeating_the_record_with_zero_amounts(self, ledger: Ledger) -> None:
        original = first_cdr(ledger)
        outcome = ledger.adjust(ledger.request("VOID", original["cdr_id"], key="k-1"))
        entry = outcome.entry
        assert entry["record_type"] == "VOID" and entry["ref_cdr_id"] == original["cdr_id"]
        assert (entry["amount_minor"], entry["tax_minor"], entry["billable"]) == (0, 0, False)
        assert entry["cdr_id"] == adjustment_cdr_id(adjustment_id_for("k-1")) != original["cdr_id"]
        assert (entry["ticket_ref"], entry["actor"]) == ("TICKET-1", "alice")
        for name in ("dlr_id", "msisdn", "done_at", "status", "segments", "operator_id"):
            assert entry[name] == original[name]

    def test_a_correct_carries_the_full_corrected_record(self, ledger: Ledger) -> None:
        original = first_cdr(ledger)
        corrected = corrected_from(original, amount_minor=original["amount_minor"] + 7, status="UNDELIVERED")
        outcome = ledger.adjust(ledger.request("CORRECT", original["cdr_id"], key="k-2", corrected=corrected))
        assert outcome.entry["record_type"] == "CORRECT"
        assert {name: outcome.entry[name] for name in CORRECTABLE_FIELDS} == corrected
        assert outcome.supersedes == original  # what the rollups take out

    @pytest.mark.parametrize("member, value, message", [
        ("ticket_ref", "", "ticket_ref is required"),
        ("ticket_ref", "x" * 65, "ticket_ref is required"),
        ("ticket_ref", "tab\there", "ticket_ref is required"),
        ("kind", "DELETE", "kind must be VOID or CORRECT"),
        ("ref_cdr_id", "NOT-A-UUID", "ref_cdr_id must be"),
        ("surprise", 1, "unknown members"),
    ])
    def test_a_malformed_body_is_refused_with_the_reason(self, member: str, value: Any, message: str) -> None:
        body = {"kind": "VOID", "ref_cdr_id": "4df915ca-f22c-5214-9542-631074267f2a", "ticket_ref": "T-1",
                member: value}
        with pytest.raises(AdjustmentRefused, match=message) as refused:
            parse_body(body)
        assert refused.value.code is RefusalCode.INVALID_REQUEST

    def test_a_correct_without_the_full_record_is_refused(self, ledger: Ledger) -> None:
        original = first_cdr(ledger)
        partial = corrected_from(original)
        del partial["msisdn"]
        body = {"kind": "CORRECT", "ref_cdr_id": original["cdr_id"], "ticket_ref": "T-1", "corrected": partial}
        with pytest.raises(AdjustmentRefused, match=r"missing \['msisdn'\]"):
            parse_body(body)
        with pytest.raises(AdjustmentRefused, match="full corrected record"):
            parse_body({**body, "corrected": None})

    @pytest.mark.parametrize("changes, message", [
        ({"done_at": "2026-01-01T00:00:00.000Z"}, "not correctable"),  # the event time is fixed
        ({"operator_id": "op-b"}, "not correctable"),
        ({"amount_minor": -1}, "non-negative"),
        ({"billable": False, "amount_minor": 5}, "not billable has zero amounts"),
        ({"msisdn": "0049123"}, "msisdn"),
        ({"submitted_at": "2026-01-01 00:00:00"}, "submitted_at"),
        ({"segments": 0}, "segments"),
        ({"status": "LOST"}, "status"),
    ])
    def test_a_corrected_record_must_be_a_valid_record_with_its_identity_unchanged(
            self, ledger: Ledger, changes: dict, message: str) -> None:
        original = first_cdr(ledger)
        corrected = {**corrected_from(original), **changes}
        with pytest.raises(AdjustmentRefused, match=message):
            parse_body({"kind": "CORRECT", "ref_cdr_id": original["cdr_id"], "ticket_ref": "T", "corrected": corrected})

    def test_a_correct_that_changes_nothing_is_refused(self, ledger: Ledger) -> None:
        original = first_cdr(ledger)
        with pytest.raises(AdjustmentRefused) as refused:
            ledger.request("CORRECT", original["cdr_id"], key="k", corrected=corrected_from(original))
        assert refused.value.code is RefusalCode.NO_CHANGE

    def test_a_void_carries_no_corrected_record_and_actor_is_required(self, ledger: Ledger) -> None:
        original = first_cdr(ledger)
        with pytest.raises(AdjustmentRefused, match="no corrected record"):
            parse_body({"kind": "VOID", "ref_cdr_id": original["cdr_id"], "ticket_ref": "T",
                        "corrected": corrected_from(original)})
        with pytest.raises(AdjustmentRefused, match="actor is required"):
            ledger.request("VOID", original["cdr_id"], key="k", actor=" ")

    def test_the_current_version_must_be_the_one_its_hash_names(self, ledger: Ledger) -> None:
        original = first_cdr(ledger)
        entry, digest = ledger.entry(original["cdr_id"])
        with pytest.raises(AdjustmentRefused, match="current_hash is not the record_hash"):
            ledger.request("VOID", original["cdr_id"], key="k", current=({**entry, "amount_minor": 1}, digest))

    def test_idempotency_keys_are_printable_and_name_one_adjustment(self) -> None:
        assert parse_idempotency_key("order-42/retry") == "order-42/retry"
        for bad in (None, "", "has space", "x" * 129, "ümlaut"):
            with pytest.raises(AdjustmentRefused):
                parse_idempotency_key(bad)
        assert adjustment_id_for("k") == adjustment_id_for("k") != adjustment_id_for("k2")

    def test_a_request_survives_its_journey_through_the_topics_byte_for_byte(self, ledger: Ledger) -> None:
        request = ledger.request("VOID", first_cdr(ledger)["cdr_id"], key="k")
        assert decode_adjustment(encode_adjustment(request)) == request
        assert request.fingerprint() == decode_adjustment(encode_adjustment(request)).fingerprint()


# --- the chain's rules (the ingest step) ---------------------------------------------------------


class TestChainRules:
    def test_adjustments_are_new_chain_entries_and_the_chain_stays_valid(self, ledger: Ledger) -> None:
        a, b = first_cdr(ledger, 0), first_cdr(ledger, 1)
        ledger.adjust(ledger.request("CORRECT", a["cdr_id"], key="k1",
                                     corrected=corrected_from(a, amount_minor=a["amount_minor"] + 1)))
        ledger.adjust(ledger.request("VOID", b["cdr_id"], key="k2"))
        ledger.dlrs(dlr(4))
        rows = [{**item[0], "record_hash": item[1]} for item in ledger.topic]
        assert [row["record_type"] for row in rows] == ["CDR", "CDR", "CDR", "CORRECT", "VOID", "CDR"]
        assert [row["chain_seq"] for row in rows] == [1, 2, 3, 4, 5, 6]
        assert verify_chain(OP, rows).ok
        # The originals are untouched: an adjustment never edits.
        assert rows[0] == {**a, "record_hash": rows[0]["record_hash"]}

    def test_a_record_cannot_be_voided_twice(self, ledger: Ledger) -> None:
        original = first_cdr(ledger)
        first = ledger.request("VOID", original["cdr_id"], key="k1")
        second = ledger.request("VOID", original["cdr_id"], key="k2")  # made from the same view
        assert ledger.adjust(first).linked is not None
        outcome = ledger.adjust(second)
        assert outcome.linked is None and outcome.refused.reason_code == RefusalCode.ALREADY_VOIDED.value
        assert outcome.new_state.chain_seq == ledger.state.chain_seq == 4  # nothing appended

    def test_a_voided_record_cannot_be_corrected(self, ledger: Ledger) -> None:
        original = first_cdr(ledger)
        correct = ledger.request("CORRECT", original["cdr_id"], key="k1",
                                 corrected=corrected_from(original, segments=2))
        ledger.adjust(ledger.request("VOID", original["cdr_id"], key="k2"))
        outcome = ledger.adjust(correct)
        assert outcome.refused.reason_code == RefusalCode.VOIDED_RECORD.value
        assert outcome.refused.original == encode_adjustment(correct)  # dead letter: the bytes and the reason

    def test_a_correction_may_follow_a_correction_of_the_version_in_force(self, ledger: Ledger) -> None:
        original = first_cdr(ledger)
        ledger.adjust(ledger.request("CORRECT", original["cdr_id"], key="k1",
                                     corrected=corrected_from(original, segments=2)))
        stale = ledger.request("CORRECT", original["cdr_id"], key="k2", current=ledger.entry(original["cdr_id"]),
                               corrected=corrected_from(original, segments=3))
        refused = ledger.adjust(stale)
        assert refused.refused.reason_code == RefusalCode.STALE_VERSION.value
        # Recorded against the request, so its status says "refused" and it stops being pending.
        assert refused.chain_refusal == ChainRefusal(stale.adjustment_id, stale.operator_id, original["cdr_id"],
                                                     "stale_version", refused.refused.detail)
        fresh = ledger.request("CORRECT", original["cdr_id"], key="k3", corrected=corrected_from(original, segments=3))
        outcome = ledger.adjust(fresh)
        assert outcome.entry["segments"] == 3 and outcome.supersedes["segments"] == 2
        void = ledger.adjust(ledger.request("VOID", original["cdr_id"], key="k4"))
        assert void.supersedes["segments"] == 3 and void.entry["segments"] == 3

    def test_only_an_original_of_this_chain_can_be_adjusted(self, ledger: Ledger, pricing: PricingSnapshot) -> None:
        other = Ledger(pricing)
        other.dlrs(dlr(900))  # the same operator's record in another world: unknown to this chain
        stranger = other.request("VOID", first_cdr(other)["cdr_id"], key="k1")
        assert ledger.adjust(stranger).refused.reason_code == RefusalCode.UNKNOWN_CDR.value
        original = first_cdr(ledger)
        void = ledger.adjust(ledger.request("VOID", original["cdr_id"], key="k2"))
        with pytest.raises(AdjustmentRefused, match="voided"):
            ledger.request("VOID", void.entry["cdr_id"], key="k3", current=ledger.entry(void.entry["cdr_id"]))

    def test_a_redelivered_request_is_applied_once(self, ledger: Ledger) -> None:
        request = ledger.request("VOID", first_cdr(ledger)["cdr_id"], key="k1")
        assert ledger.adjust(request).linked is not None
        again = ledger.adjust(request)  # the forwarder copied it twice
        assert again.duplicate and again.linked is None and again.refused is None
        assert sum(1 for item in ledger.topic if item[0]["record_type"] == "VOID") == 1

    def test_a_reused_adjustment_id_with_other_content_is_refused(self, ledger: Ledger) -> None:
        a, b = first_cdr(ledger, 0), first_cdr(ledger, 1)
        ledger.adjust(ledger.request("VOID", a["cdr_id"], key="same"))
        outcome = ledger.adjust(ledger.request("VOID", b["cdr_id"], key="same"))
        assert outcome.refused.reason_code == RefusalCode.ADJUSTMENT_ID_REUSED.value
        assert outcome.chain_refusal is None  # the id is the applied request's: its status stays "applied"

    def test_undecodable_records_are_dead_lettered_and_do_not_stop_the_chain(self, ledger: Ledger) -> None:
        outcome = ledger.adjust(b'{"format":"adjustment.v1","request":{"kind":"VOID"}}')
        assert outcome.refused.reason_code == RefusalCode.INVALID_REQUEST.value
        assert outcome.chain_refusal is None  # no request, no id to record it against
        assert outcome.new_state.applied_offset == ledger.offset and outcome.new_state.chain_seq == 3
        ledger.dlrs(dlr(4))
        assert ledger.state.chain_seq == 4

    def test_a_crash_before_the_state_is_written_repeats_the_same_entry(self, ledger: Ledger) -> None:
        request = ledger.request("VOID", first_cdr(ledger)["cdr_id"], key="k1")
        state, table = ledger.state, dict(ledger.table)
        raw = encode_adjustment(request)
        first = apply_adjustment(state, decode_adjustment(raw), raw, 7, table.get)
        table.update(first.table_writes)  # the entries were written, the state was not
        again = apply_adjustment(state, decode_adjustment(raw), raw, 7, table.get)
        assert again.entry == first.entry and again.linked == first.linked and not again.duplicate
        assert apply_adjustment(again.new_state, decode_adjustment(raw), raw, 7, table.get).already_applied
        assert applied_adjustment_key(OP, request.adjustment_id) in first.table_writes
        assert adjusted_key(OP, request.ref_cdr_id) in first.table_writes


# --- effect on rollups and on the next export ----------------------------------------------------


class TestEffects:
    def test_rollups_net_adjustments_and_match_the_recomputation(self, ledger: Ledger) -> None:
        a, b, c = (first_cdr(ledger, n) for n in range(3))
        ledger.adjust(ledger.request("CORRECT", a["cdr_id"], key="k1",
                                     corrected=corrected_from(a, amount_minor=a["amount_minor"] + 100)))
        ledger.adjust(ledger.request("VOID", b["cdr_id"], key="k2"))
        step = apply_entries(OperatorRollupState.initial(OP), ledger.topic)
        hours = {h: r for h, r in step.new_state.open_hours.items()}
        (hour,) = hours
        rollup = hours[hour]
        assert rollup.records == 2  # a (corrected) and c; b is voided
        assert rollup.amount_minor == a["amount_minor"] + 100 + c["amount_minor"]
        assert dict(rollup.adjustments) == {"VOID": 1, "CORRECT": 1}
        assert rollup == recompute_rollups([item[0] for item in ledger.topic])[hour]

    def test_a_file_carries_the_adjustments_of_days_closed_before_it(self) -> None:
        day1 = file_scope(OP, "2026-04-10", 1, 100, {})
        day2 = file_scope(OP, "2026-04-11", 2, 250, {1: ("2026-04-10", 100)})
        assert (day1.after_seq, day1.carried_days) == (0, ())
        assert (day2.after_seq, day2.carried_days) == (100, ("2026-04-10",))
        # A VOID at chain_seq 180 of a record of 04-10: not in 04-10's file, carried by 04-11's.
        assert not day1.holds(180, "2026-04-10") and day2.holds(180, "2026-04-10")
        # One at chain_seq 90, before 04-10 closed, travels with its own day's file.
        assert day1.holds(90, "2026-04-10") and not day2.holds(90, "2026-04-10")
        # An adjustment of a record of a day that has not closed waits for that day's file.
        assert not day2.holds(200, "2026-04-12")
        assert file_scope(OP, "2026-04-12", 3, 400, {1: ("2026-04-10", 100), 2: ("2026-04-11", 250)}).holds(
            200, "2026-04-12")

    def test_every_entry_is_in_exactly_one_file(self) -> None:
        closes = {1: ("2026-04-10", 100), 2: ("2026-04-11", 180), 3: ("2026-04-09", 240), 4: ("2026-04-12", 300)}
        scopes = [file_scope(OP, closes[k][0], k, closes[k][1], {n: closes[n] for n in closes if n < k})
                  for k in sorted(closes)]
        for seq in range(1, 301):
            for day in ("2026-04-09", "2026-04-10", "2026-04-11", "2026-04-12"):
                holders = [s.day for s in scopes if s.holds(seq, day)]
                closed_at = next(k for k in closes if closes[k][0] == day)
                if seq <= closes[closed_at][1] or any(h >= seq for _, h in closes.values()):
                    assert len(holders) == 1, (seq, day, holders)

    def test_a_file_scope_needs_every_earlier_close(self) -> None:
        with pytest.raises(ValueError, match="earlier closes"):
            file_scope(OP, "2026-04-12", 3, 400, {1: ("2026-04-10", 100)})
        with pytest.raises(ValueError, match="past this close"):
            file_scope(OP, "2026-04-11", 2, 50, {1: ("2026-04-10", 100)})

    def test_a_closed_hour_gets_a_delta_and_the_merged_hour_is_the_records_in_force(self, ledger: Ledger) -> None:
        first = apply_entries(OperatorRollupState.initial(OP), ledger.topic)
        # Close the DLRs' hour with a much later record, then void one of them.
        ledger.dlrs(dlr(4, done_at="2026-12-01T00:00:00Z", submitted_at="2026-12-01T00:00:00Z"))
        closing = apply_entries(first.new_state, ledger.topic[3:])
        victim = first_cdr(ledger, 1)
        ledger.adjust(ledger.request("VOID", victim["cdr_id"], key="k1"))
        ledger.dlrs(dlr(5, done_at="2026-12-01T06:00:00Z", submitted_at="2026-12-01T06:00:00Z"))
        later = apply_entries(closing.new_state, ledger.topic[4:])
        base = [c for c in closing.closed if c.revision == 0 and c.rollup.records]
        deltas = [c for c in later.closed if c.revision == 1]
        assert len(base) == 1 and len(deltas) == 1 and deltas[0].hour_start == base[0].hour_start
        assert deltas[0].rollup.records == -1 and deltas[0].rollup.amount_minor == -victim["amount_minor"]
        merged = merge([base[0], deltas[0]])
        assert merged.records == 2 and merged.adjustments["VOID"] == 1
