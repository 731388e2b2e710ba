"""The audit log's chain rule (docs/audit.md): hashing, linking, and the verifier's first break."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from cdr_mediation.domain.audit import (
    ENTRY_KEYS,
    GENESIS_PREV_HASH,
    AuditBreakKind,
    AuditDraft,
    AuditHead,
    InvalidAuditEntry,
    append,
    check_audit_chain,
    entry_hash,
    verify_audit_chain,
)

AT = "2026-11-04T02:00:01.123456Z"


def draft(n: int = 1, **changes: Any) -> AuditDraft:
    values: dict[str, Any] = {
        "actor": "exporter", "actor_role": "system", "action": "export.transition", "request_id": f"req-{n}",
        "refs": {"operator_id": "op-a", "day": "2026-11-03", "file_name": "CDOPAAATRAA00005"},
        "detail": {"from_state": "PENDING", "event": "built", "to_state": "BUILT", "step": n},
    }
    values.update(changes)
    return AuditDraft(**values)


def build_rows(count: int) -> list[dict[str, Any]]:
    """Stored rows: each entry plus its entry_hash, as the store reads them back."""
    head, rows = AuditHead.genesis(), []
    for n in range(1, count + 1):
        entry = append(head, draft(n), f"2026-11-04T02:00:{n % 60:02d}.{n:06d}Z")
        head = entry.head
        rows.append(entry.to_row())
    return rows


# --- the rule -------------------------------------------------------------------------------

def test_the_first_entry_hashes_the_jcs_bytes_written_out_by_hand():
    # The contract example of docs/audit.md §3, written without our serialiser.
    jcs = (b'{"action":"export.transition","actor":"exporter","actor_role":"system",'
           b'"at":"2026-11-04T02:00:01.123456Z","audit_seq":1,'
           b'"detail":{"event":"built","from_state":"PENDING","step":1,"to_state":"BUILT"},'
           b'"prev_hash":"' + b"0" * 64 + b'",'
           b'"refs":{"day":"2026-11-03","file_name":"CDOPAAATRAA00005","operator_id":"op-a"},'
           b'"request_id":"req-1"}')
    entry = append(AuditHead.genesis(), draft(1), AT)
    assert (entry.audit_seq, entry.prev_hash, entry.at) == (1, GENESIS_PREV_HASH, AT)
    assert rfc8785.dumps(entry.to_entry()) == jcs
    assert entry.entry_hash == hashlib.sha256(jcs).hexdigest()
    assert entry.entry_hash == "2f1473cc7a320a427bfc80bbf1f679dc2cc7c25b2413608782aaed6c3e30f385"


def test_the_entry_is_exactly_its_nine_members_and_the_hash_is_not_one_of_them():
    entry = append(AuditHead.genesis(), draft(), AT)
    assert tuple(sorted(entry.to_entry())) == tuple(sorted(ENTRY_KEYS))
    assert "entry_hash" not in entry.to_entry()
    assert entry.to_row() == {**entry.to_entry(), "entry_hash": entry.entry_hash}


def test_each_entry_links_to_the_hash_of_the_one_before():
    rows = build_rows(5)
    assert [row["audit_seq"] for row in rows] == [1, 2, 3, 4, 5]
    assert [row["prev_hash"] for row in rows] == [GENESIS_PREV_HASH] + [row["entry_hash"] for row in rows[:-1]]
    for row in rows:
        assert row["entry_hash"] == hashlib.sha256(
            rfc8785.dumps({k: v for k, v in row.items() if k != "entry_hash"})).hexdigest()


def test_the_time_is_part_of_the_hash_exactly_as_written():
    first = append(AuditHead.genesis(), draft(), "2026-11-04T02:00:01.123456Z")
    later = append(AuditHead.genesis(), draft(), "2026-11-04T02:00:01.123457Z")
    assert first.entry_hash != later.entry_hash


@pytest.mark.parametrize("at", ["2026-11-04T02:00:01.123Z", "2026-11-04T02:00:01.123456+00:00",
                                "2026-11-04 02:00:01.123456Z", "2026-11-04T02:00:01Z", "", None])
def test_only_the_one_time_form_is_accepted(at):
    with pytest.raises(InvalidAuditEntry, match="at must be"):
        append(AuditHead.genesis(), draft(), at)


@pytest.mark.parametrize("changes, member", [
    ({"actor": ""}, "actor"), ({"actor": " bob"}, "actor"), ({"actor": "bob\n"}, "actor"),
    ({"actor_role": "root"}, "actor_role"), ({"action": "transition"}, "action"),
    ({"action": "Export.Transition"}, "action"), ({"request_id": ""}, "request_id"),
    ({"refs": {"amount": 1.5}}, "refs"), ({"refs": ["op-a"]}, "refs"), ({"refs": {"opérateur": "x"}}, "refs"),
    ({"detail": {"n": 2**53}}, "detail"), ({"detail": {"text": "a\x00b"}}, "detail"),
    ({"detail": {"nested": {"t": (1, 2)}}}, "detail"),
])
def test_a_draft_the_log_could_not_hold_exactly_is_refused_naming_the_member(changes, member):
    with pytest.raises(InvalidAuditEntry, match=member):
        draft(**changes)


@settings(max_examples=200)
@given(st.dictionaries(st.text(alphabet=st.characters(max_codepoint=127), max_size=8),
                       st.recursive(st.none() | st.booleans() | st.integers(-(2**53 - 1), 2**53 - 1)
                                    | st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                                                     blacklist_characters="\x00")),
                                    lambda inner: st.lists(inner, max_size=3)
                                    | st.dictionaries(st.text(alphabet=st.characters(max_codepoint=127,
                                                                                     blacklist_characters="\x00"),
                                                              max_size=5), inner, max_size=3),
                                    max_leaves=10), max_size=5)
       .filter(lambda d: "\x00" not in "".join(d)))
def test_any_admissible_detail_hashes_as_the_reference_jcs_and_verifies(detail):
    entry = append(AuditHead.genesis(), draft(detail=detail), AT)
    jcs = rfc8785.dumps(entry.to_entry())
    assert entry.entry_hash == hashlib.sha256(jcs).hexdigest()
    assert verify_audit_chain([entry.to_row()]) is None
    # docs/audit.md §3 tells auditors this standard-library form is the JCS of every admissible entry.
    assert json.dumps(entry.to_entry(), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() == jcs


# --- the verifier ---------------------------------------------------------------------------

def test_an_intact_log_has_no_break_and_reports_its_head():
    rows = build_rows(6)
    result = check_audit_chain(rows)
    assert result.ok and result.verified == 6
    assert result.head == AuditHead(6, rows[-1]["entry_hash"])
    assert verify_audit_chain(rows) is None
    assert verify_audit_chain([]) is None


@pytest.mark.parametrize("member, value", [
    ("at", "2026-11-04T02:00:03.999999Z"), ("actor", "someone-else"), ("actor_role", "admin"),
    ("action", "chain.verify"), ("request_id", "req-x"), ("refs", {"operator_id": "op-b"}),
    ("detail", {"from_state": "PENDING", "event": "built", "to_state": "BUILT", "step": 4}),
])
def test_a_changed_member_is_a_hash_mismatch_at_that_entry(member, value):
    rows = build_rows(5)
    rows[2] = {**rows[2], member: value}
    fault = verify_audit_chain(rows)
    assert (fault.kind, fault.seq, fault.index) == (AuditBreakKind.HASH_MISMATCH, 3, 2)
    assert fault.found == rows[2]["entry_hash"] and fault.expected != fault.found


def test_a_changed_entry_whose_hash_was_recomputed_breaks_the_link_of_the_next():
    rows = build_rows(5)
    forged = {**rows[2], "actor": "someone-else"}
    forged["entry_hash"] = entry_hash({k: forged[k] for k in ENTRY_KEYS})
    rows[2] = forged
    fault = verify_audit_chain(rows)
    assert (fault.kind, fault.seq, fault.index) == (AuditBreakKind.PREV_HASH_MISMATCH, 4, 3)
    assert (fault.expected, fault.found) == (forged["entry_hash"], rows[3]["prev_hash"])


def test_a_removed_entry_is_a_gap_naming_the_missing_seq():
    rows = build_rows(5)
    del rows[2]
    fault = verify_audit_chain(rows)
    assert (fault.kind, fault.seq, fault.expected, fault.found, fault.index) == (AuditBreakKind.GAP, 3, "3", "4", 2)


def test_two_swapped_entries_are_out_of_order():
    rows = build_rows(5)
    rows[2], rows[3] = rows[3], rows[2]
    fault = verify_audit_chain(rows)
    assert (fault.kind, fault.seq, fault.expected, fault.found, fault.index) == (
        AuditBreakKind.OUT_OF_ORDER, 3, "3", "4", 2)


def test_an_entry_moved_up_is_out_of_order_where_it_stands():
    rows = build_rows(6)
    rows.insert(1, rows.pop(4))  # 1, 5, 2, 3, 4, 6
    fault = verify_audit_chain(rows)
    assert (fault.kind, fault.expected, fault.found, fault.index) == (AuditBreakKind.OUT_OF_ORDER, "2", "5", 1)


def test_an_entry_moved_back_is_missing_where_it_belonged():
    rows = build_rows(6)
    rows.insert(4, rows.pop(1))  # 1, 3, 4, 5, 2, 6
    fault = verify_audit_chain(rows)
    assert (fault.kind, fault.expected, fault.found, fault.index) == (AuditBreakKind.GAP, "2", "3", 1)


def test_an_entry_repeated_is_a_duplicate():
    rows = build_rows(4)
    rows.insert(2, rows[1])
    fault = verify_audit_chain(rows)
    assert (fault.kind, fault.seq, fault.found, fault.index) == (AuditBreakKind.DUPLICATE_SEQ, 3, "2", 2)


@pytest.mark.parametrize("mangle, problem", [
    (lambda row: row.pop("request_id"), "members"),
    (lambda row: row.update(extra=1), "members"),
    (lambda row: row.update(audit_seq="3"), "audit_seq"),
    (lambda row: row.update(prev_hash="A" * 64), "prev_hash"),
    (lambda row: row.update(entry_hash="0" * 63), "entry_hash"),
    (lambda row: row.update(at="2026-11-04T02:00:03Z"), "at"),
    (lambda row: row.update(refs="op-a"), "refs"),
])
def test_a_malformed_entry_is_named(mangle, problem):
    rows = build_rows(4)
    mangle(rows[2])
    fault = verify_audit_chain(rows)
    assert (fault.kind, fault.seq, fault.index) == (AuditBreakKind.MALFORMED_ENTRY, 3, 2)
    assert problem in fault.found


def test_a_removed_tail_and_a_rewritten_tail_show_against_a_recorded_head():
    rows = build_rows(6)
    recorded = AuditHead(6, rows[-1]["entry_hash"])
    assert verify_audit_chain(rows, expected_head=recorded) is None
    fault = verify_audit_chain(rows[:4], expected_head=recorded)
    assert (fault.kind, fault.expected, fault.found, fault.index) == (AuditBreakKind.TRUNCATED, "6", "4", None)
    rewritten = rows[:5]
    head = AuditHead(5, rewritten[-1]["entry_hash"])
    replacement = append(head, draft(99), "2026-11-04T03:00:00.000000Z").to_row()
    fault = verify_audit_chain(rewritten + [replacement], expected_head=recorded)
    assert (fault.kind, fault.seq, fault.index) == (AuditBreakKind.HEAD_MISMATCH, 6, 5)


def test_verification_continues_from_a_start_head():
    rows = build_rows(6)
    result = check_audit_chain(rows[3:], start=AuditHead(3, rows[2]["entry_hash"]))
    assert result.ok and result.verified == 3 and result.head.audit_seq == 6
    fault = verify_audit_chain(rows[3:], start=AuditHead(3, "f" * 64))
    assert fault.kind is AuditBreakKind.PREV_HASH_MISMATCH


def test_the_report_is_json_ready():
    rows = build_rows(3)
    del rows[1]
    report = check_audit_chain(rows).to_dict()
    assert report == {"ok": False, "verified": 1, "head": {"audit_seq": 1, "entry_hash": rows[0]["entry_hash"]},
                      "first_break": {"kind": "gap", "seq": 2, "expected": "2", "found": "3", "index": 1}}
