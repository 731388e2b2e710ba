"""Per-operator hash chain (DESIGN.md §5): hashing, linking, and the verifier's first break."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from cdr_mediation.domain.cdr import Cdr, DlrStatus, RecordType
from cdr_mediation.domain.chain import (
    BreakKind,
    ChainHead,
    link,
    record_hash,
    verify_chain,
)

ZERO = "0" * 64


def unlinked(n: int, operator_id: str = "op-a") -> Cdr:
    return Cdr(
        record_type=RecordType.CDR,
        cdr_id=f"00000000-0000-5000-8000-{n:012d}",
        dlr_id=f"dlr-{n}",
        message_id=f"msg-{n}",
        tenant_id="tenant-1",
        operator_id=operator_id,
        sender_id="ACME",
        msisdn="+4915123456789",
        status=DlrStatus.DELIVERED if n % 3 else DlrStatus.EXPIRED,
        submitted_at="2026-04-10T10:15:00.123Z",
        done_at=f"2026-04-10T10:15:{n % 60:02d}.456Z",
        segments=1 + n % 4,
        billable=bool(n % 3),
        unit_price_minor=5,
        amount_minor=5 * (1 + n % 4) if n % 3 else 0,
        tax_minor=1 if n % 3 else 0,
        currency="EUR",
        pricing_version="op-a/default/2026-01",
        error_code=None if n % 3 else "0x0000000B",
        smsc_id="smsc-fra-1",
        chain_seq=0,
        prev_hash="",
    )


def build_rows(count: int, operator_id: str = "op-a") -> list[dict[str, Any]]:
    """Stored rows: each linked entry plus its record_hash."""
    head = ChainHead.genesis(operator_id)
    rows = []
    for n in range(1, count + 1):
        cdr, digest = link(head, unlinked(n, operator_id))
        head = head.advance(cdr, digest)
        rows.append({**cdr.to_entry(), "record_hash": digest})
    return rows


def reference_hash(row: dict[str, Any]) -> str:
    entry = {k: v for k, v in row.items() if k != "record_hash"}
    return hashlib.sha256(rfc8785.dumps(entry)).hexdigest()


def first_break(rows: list[dict[str, Any]], **kwargs: Any) -> tuple[str, int, str, str]:
    result = verify_chain("op-a", rows, **kwargs)
    assert not result.ok
    fault = result.first_break
    return fault.kind.value, fault.seq, fault.expected, fault.found


class TestHashingAndLinking:
    def test_genesis_entry_has_seq_1_and_zero_prev_hash(self) -> None:
        cdr, digest = link(ChainHead.genesis("op-a"), unlinked(1))
        assert (cdr.chain_seq, cdr.prev_hash) == (1, ZERO)
        assert len(digest) == 64 and digest == digest.lower()

    def test_record_hash_is_sha256_of_the_rfc8785_bytes(self) -> None:
        cdr, digest = link(ChainHead.genesis("op-a"), unlinked(1))
        assert digest == hashlib.sha256(rfc8785.dumps(cdr.to_entry())).hexdigest()
        assert record_hash(cdr) == record_hash(cdr.to_entry()) == digest

    def test_each_prev_hash_is_the_previous_record_hash(self) -> None:
        rows = build_rows(5)
        assert [r["chain_seq"] for r in rows] == [1, 2, 3, 4, 5]
        for before, after in zip(rows, rows[1:], strict=False):
            assert after["prev_hash"] == before["record_hash"] == reference_hash(before)

    def test_entry_contains_seq_and_prev_hash_but_not_its_own_hash(self) -> None:
        cdr, _ = link(ChainHead.genesis("op-a"), unlinked(1))
        entry = cdr.to_entry()
        assert entry["chain_seq"] == 1 and entry["prev_hash"] == ZERO
        assert "record_hash" not in entry

    def test_link_refuses_another_operators_entry(self) -> None:
        with pytest.raises(ValueError, match="cannot join"):
            link(ChainHead.genesis("op-a"), unlinked(1, operator_id="op-b"))

    def test_link_refuses_an_already_linked_entry(self) -> None:
        cdr, _ = link(ChainHead.genesis("op-a"), unlinked(1))
        with pytest.raises(ValueError, match="already linked"):
            link(ChainHead.genesis("op-a"), cdr)

    def test_head_only_advances_by_its_successor(self) -> None:
        head = ChainHead.genesis("op-a")
        cdr, digest = link(head, unlinked(1))
        assert head.advance(cdr, digest) == ChainHead("op-a", 1, digest)
        with pytest.raises(ValueError):
            head.advance(dataclasses.replace(cdr, chain_seq=2), digest)


class TestVerifyValid:
    def test_valid_chain_verifies_to_its_head(self) -> None:
        rows = build_rows(6)
        result = verify_chain("op-a", rows)
        assert result.ok and result.verified == 6
        assert result.head == ChainHead("op-a", 6, rows[-1]["record_hash"])

    def test_empty_chain_is_valid(self) -> None:
        result = verify_chain("op-a", [])
        assert result.ok and result.head == ChainHead.genesis("op-a")

    def test_a_suffix_verifies_from_its_checkpoint_head(self) -> None:
        rows = build_rows(6)
        start = ChainHead("op-a", 3, rows[2]["record_hash"])
        end = ChainHead("op-a", 6, rows[5]["record_hash"])
        result = verify_chain("op-a", rows[3:], start=start, expected_head=end)
        assert result.ok and result.verified == 3

    def test_int_read_back_as_an_equal_float_is_the_same_json_number(self) -> None:
        # RFC 8785 serialises 10.0 as 10: a driver returning floats does not break the chain.
        rows = build_rows(3)
        rows[1]["amount_minor"] = float(rows[1]["amount_minor"])
        assert verify_chain("op-a", rows).ok


class TestTampering:
    # Every entry field, tampered in place in row 4 of 5 (without recomputing anything).
    FIELD_VALUES = {
        "record_type": "VOID", "cdr_id": "00000000-0000-5000-8000-999999999999",
        "dlr_id": "dlr-x", "message_id": "msg-x", "tenant_id": "tenant-x",
        "sender_id": "EVIL", "msisdn": "+4915100000000", "status": "UNDELIVERED",
        "submitted_at": "2026-04-10T10:15:00.124Z", "done_at": "2026-04-10T10:15:03.457Z",
        "segments": 9, "billable": False, "unit_price_minor": 4, "amount_minor": 12345,
        "tax_minor": 777, "currency": "USD", "pricing_version": "op-a/cheap",
        "error_code": "0x01", "smsc_id": "smsc-x", "ref_cdr_id": "x",
        "ticket_ref": "T-1", "actor": "mallory",
    }

    @pytest.mark.parametrize("field", sorted(FIELD_VALUES))
    def test_tampering_any_field_is_a_hash_mismatch_at_that_seq(self, field: str) -> None:
        rows = build_rows(5)
        assert rows[3][field] != self.FIELD_VALUES[field]
        rows[3][field] = self.FIELD_VALUES[field]
        kind, seq, expected, found = first_break(rows)
        assert (kind, seq) == ("hash_mismatch", 4)
        assert found == rows[3]["record_hash"] and expected == reference_hash(rows[3])

    def test_float_where_an_integer_was_is_a_hash_mismatch(self) -> None:
        rows = build_rows(3)
        rows[1]["amount_minor"] = rows[1]["amount_minor"] + 0.5
        assert first_break(rows)[:2] == ("hash_mismatch", 2)

    def test_added_field_is_a_hash_mismatch(self) -> None:
        rows = build_rows(3)
        rows[1]["discount_minor"] = 5
        assert first_break(rows)[:2] == ("hash_mismatch", 2)

    def test_removed_field_is_a_hash_mismatch(self) -> None:
        rows = build_rows(3)
        del rows[1]["actor"]
        assert first_break(rows)[:2] == ("hash_mismatch", 2)

    def test_tampered_prev_hash_is_a_prev_hash_mismatch(self) -> None:
        rows = build_rows(5)
        rows[2]["prev_hash"] = "f" * 64
        assert first_break(rows) == ("prev_hash_mismatch", 3, rows[1]["record_hash"], "f" * 64)

    def test_tampered_record_hash(self) -> None:
        rows = build_rows(5)
        true_hash = rows[3]["record_hash"]
        rows[3]["record_hash"] = "a" * 64
        assert first_break(rows) == ("hash_mismatch", 4, true_hash, "a" * 64)

    def test_tampered_genesis_prev_hash(self) -> None:
        rows = build_rows(2)
        rows[0]["prev_hash"] = "1" + ZERO[1:]
        assert first_break(rows)[:3] == ("prev_hash_mismatch", 1, ZERO)

    def test_row_rehashed_after_tampering_breaks_the_next_link(self) -> None:
        rows = build_rows(5)
        rows[2]["amount_minor"] = 999
        rows[2]["record_hash"] = reference_hash(rows[2])
        assert first_break(rows) == (
            "prev_hash_mismatch", 4, rows[2]["record_hash"], rows[3]["prev_hash"],
        )

    def test_tampered_last_row_rehashed_is_caught_by_the_checkpoint(self) -> None:
        rows = build_rows(5)
        checkpoint = ChainHead("op-a", 5, rows[4]["record_hash"])
        rows[4]["amount_minor"] = 999
        rows[4]["record_hash"] = reference_hash(rows[4])
        assert verify_chain("op-a", rows).ok  # rows alone cannot tell
        assert first_break(rows, expected_head=checkpoint) == (
            "head_mismatch", 5, checkpoint.head_hash, rows[4]["record_hash"],
        )

    def test_chain_rewritten_from_a_row_on_is_caught_by_the_checkpoint(self) -> None:
        rows = build_rows(6)
        checkpoint = ChainHead("op-a", 6, rows[5]["record_hash"])
        forged = rows[:2]
        head = ChainHead("op-a", 2, rows[1]["record_hash"])
        for n in range(3, 7):
            cdr, digest = link(head, dataclasses.replace(unlinked(n), amount_minor=999))
            head = head.advance(cdr, digest)
            forged.append({**cdr.to_entry(), "record_hash": digest})
        kind, seq, *_ = first_break(forged, expected_head=checkpoint)
        assert (kind, seq) == ("head_mismatch", 6)


class TestStructure:
    def test_deleted_row_is_a_gap(self) -> None:
        rows = build_rows(5)
        del rows[2]
        assert first_break(rows) == ("gap", 3, "3", "4")

    def test_deleted_first_row_is_a_gap_at_seq_1(self) -> None:
        rows = build_rows(3)
        assert first_break(rows[1:]) == ("gap", 1, "1", "2")

    def test_deleted_last_row_is_caught_by_the_checkpoint(self) -> None:
        rows = build_rows(5)
        checkpoint = ChainHead("op-a", 5, rows[4]["record_hash"])
        result = verify_chain("op-a", rows[:4], expected_head=checkpoint)
        assert (result.first_break.kind, result.first_break.seq) == (BreakKind.TRUNCATED, 5)
        assert (result.first_break.expected, result.first_break.found) == ("5", "4")

    def test_swapped_rows_break_at_the_first_swapped_position(self) -> None:
        rows = build_rows(5)
        rows[1], rows[2] = rows[2], rows[1]
        assert first_break(rows) == ("gap", 2, "2", "3")

    def test_swapped_contents_with_renumbered_seqs_are_a_hash_mismatch(self) -> None:
        rows = build_rows(5)
        a, b = dict(rows[2]), dict(rows[1])
        a["chain_seq"], b["chain_seq"] = 2, 3
        a["prev_hash"], b["prev_hash"] = rows[0]["record_hash"], a["record_hash"]
        rows[1], rows[2] = a, b
        assert first_break(rows)[:2] == ("hash_mismatch", 2)

    def test_row_sent_back_in_time_is_out_of_order(self) -> None:
        rows = build_rows(5)
        rows.insert(4, dict(rows[1]))
        assert first_break(rows) == ("out_of_order", 5, "5", "2")

    def test_inserted_row_with_an_existing_seq_is_a_duplicate(self) -> None:
        rows = build_rows(5)
        forged = dict(rows[2])
        forged["amount_minor"] = 999
        forged["record_hash"] = reference_hash(forged)
        rows.insert(3, forged)
        assert first_break(rows) == ("duplicate_seq", 4, "4", "3")

    def test_inserted_row_with_renumbered_successors_breaks_the_link(self) -> None:
        rows = build_rows(4)
        extra = {**unlinked(99).to_entry(), "chain_seq": 3, "prev_hash": rows[1]["record_hash"]}
        extra["record_hash"] = reference_hash(extra)
        shifted = [dict(r, chain_seq=r["chain_seq"] + 1) for r in rows[2:]]
        kind, seq, *_ = first_break(rows[:2] + [extra] + shifted)
        assert (kind, seq) == ("prev_hash_mismatch", 4)

    def test_row_of_another_operator(self) -> None:
        rows = build_rows(3)
        rows[1]["operator_id"] = "op-b"
        assert first_break(rows) == ("wrong_operator", 2, "op-a", "op-b")

    @pytest.mark.parametrize(
        "mutate",
        [
            lambda r: r.pop("record_hash"),
            lambda r: r.update(chain_seq=True),
            lambda r: r.update(chain_seq="2"),
            lambda r: r.update(prev_hash=r["prev_hash"].upper()),
            lambda r: r.update(record_hash=r["record_hash"][:63]),
        ],
        ids=["no_record_hash", "seq_bool", "seq_string", "uppercase_hex", "short_hash"],
    )
    def test_malformed_row(self, mutate: Any) -> None:
        rows = build_rows(3)
        mutate(rows[1])
        assert first_break(rows)[:2] == ("malformed_row", 2)

    def test_wrong_start_head(self) -> None:
        rows = build_rows(4)
        start = ChainHead("op-a", 2, "b" * 64)
        assert first_break(rows[2:], start=start) == (
            "prev_hash_mismatch", 3, "b" * 64, rows[2]["prev_hash"],
        )

    def test_verified_count_and_head_stop_before_the_break(self) -> None:
        rows = build_rows(5)
        rows[3]["segments"] = 0
        result = verify_chain("op-a", rows)
        assert result.verified == 3
        assert result.head == ChainHead("op-a", 3, rows[2]["record_hash"])
        assert result.first_break.index == 3


@settings(max_examples=200, deadline=None)
@given(
    length=st.integers(1, 12),
    data=st.data(),
)
def test_any_single_field_change_is_found_at_its_row(length: int, data: st.DataObject) -> None:
    rows = build_rows(length)
    position = data.draw(st.integers(0, length - 1))
    field = data.draw(st.sampled_from(sorted(TestTampering.FIELD_VALUES)))
    value = TestTampering.FIELD_VALUES[field]
    if rows[position][field] == value:
        return
    rows[position][field] = value
    kind, seq, *_ = first_break(rows)
    assert (kind, seq) == ("hash_mismatch", position + 1)
