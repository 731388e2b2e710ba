"""Cold segments: which range goes cold, the manifest contract, and the check a restore relies on."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from cdr_mediation.codecs.canonical_json import canonical_bytes
from cdr_mediation.domain.cold_segment import (
    MANIFEST_FORMAT,
    ManifestInvalid,
    SegmentContent,
    SegmentFileDigest,
    SegmentManifest,
    SegmentRange,
    plan_segment,
    segment_line,
    verify_segment_lines,
)

from .domain_samples import chain_rows

def segment_of(rows: list[dict], first: int, last: int) -> tuple[SegmentManifest, list[bytes]]:
    """Manifest and lines of rows[first-1 .. last-1], as the cold job would write them."""
    segment = SegmentRange(rows[0]["operator_id"], first, last)
    content = SegmentContent(segment)
    lines = [content.add(row) for row in rows[first - 1:last]]
    body = b"".join(lines)
    digest = SegmentFileDigest("f" * 64, 1234, hashlib.sha256(body).hexdigest(), len(body))
    prev_hash = rows[first - 1]["prev_hash"]
    return content.manifest(prev_hash=prev_hash, head_hash=rows[last - 1]["record_hash"], file=digest), lines


# -- which range goes cold ---------------------------------------------------------------------

def test_everything_old_goes_except_the_head():
    assert plan_segment("op-a", next_seq=1, head_seq=500, first_recent_seq=None, max_rows=10_000) == \
        SegmentRange("op-a", 1, 499)


def test_the_first_recent_entry_holds_back_everything_after_it():
    assert plan_segment("op-a", next_seq=1, head_seq=500, first_recent_seq=120, max_rows=10_000) == \
        SegmentRange("op-a", 1, 119)


def test_a_segment_has_at_most_max_rows_and_the_next_continues_it():
    first = plan_segment("op-a", next_seq=1, head_seq=500, first_recent_seq=None, max_rows=200)
    second = plan_segment("op-a", next_seq=first.last_seq + 1, head_seq=500, first_recent_seq=None, max_rows=200)
    assert (first.first_seq, first.last_seq, second.first_seq, second.last_seq) == (1, 200, 201, 400)


@pytest.mark.parametrize("next_seq, head_seq, first_recent", [
    (1, 500, 1),  # the very next entry is recent
    (500, 500, None),  # only the head is left
    (1, 0, None),  # an empty chain
    (1, 1, None),  # a chain of one: its head
])
def test_nothing_is_eligible(next_seq, head_seq, first_recent):
    assert plan_segment("op-a", next_seq=next_seq, head_seq=head_seq, first_recent_seq=first_recent,
                        max_rows=100) is None


def test_a_recent_entry_before_the_start_is_a_caller_bug():
    with pytest.raises(ValueError):
        plan_segment("op-a", next_seq=10, head_seq=500, first_recent_seq=5, max_rows=100)


def test_segment_keys_sort_in_chain_order():
    segment = SegmentRange("op-a", 1, 4999)
    assert segment.segment_key == "cold/cdr/op-a/000000000001-000000004999.jsonl.gz"
    assert segment.manifest_key == "cold/cdr/op-a/000000000001-000000004999.manifest.json"
    later = SegmentRange("op-a", 5000, 10_000)
    assert sorted([later.segment_key, segment.segment_key]) == [segment.segment_key, later.segment_key]


@pytest.mark.parametrize("operator_id, first, last", [("op/a", 1, 2), ("", 1, 2), ("op-a", 0, 2), ("op-a", 3, 2)])
def test_invalid_ranges_are_refused(operator_id, first, last):
    with pytest.raises(ValueError):
        SegmentRange(operator_id, first, last)


# -- lines and manifest ------------------------------------------------------------------------

def test_a_line_is_the_hashed_entry_plus_its_record_hash():
    row = chain_rows("op-a", 1)[0]
    line = segment_line(row)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    parsed = json.loads(line)
    assert parsed == row
    entry = {k: v for k, v in parsed.items() if k != "record_hash"}
    assert hashlib.sha256(canonical_bytes(entry)).hexdigest() == row["record_hash"]
    assert line == canonical_bytes(row) + b"\n"


def test_the_same_rows_give_the_same_manifest_bytes():
    rows = chain_rows("op-a", 30)
    first, _ = segment_of(rows, 1, 20)
    again, _ = segment_of(chain_rows("op-a", 30), 1, 20)
    assert first.to_bytes() == again.to_bytes()
    assert first.to_bytes() == canonical_bytes(json.loads(first.to_bytes()))  # RFC 8785 as written
    assert SegmentManifest.from_bytes(first.to_bytes()) == first


def test_the_manifest_states_range_hashes_and_done_at_range():
    rows = chain_rows("op-a", 30, minutes=[30 - n for n in range(30)])  # done_at falls as chain_seq rises
    manifest, _ = segment_of(rows, 11, 20)
    document = json.loads(manifest.to_bytes())
    assert document["format"] == MANIFEST_FORMAT
    assert (document["first_seq"], document["last_seq"], document["record_count"]) == (11, 20, 10)
    assert document["prev_hash"] == rows[9]["record_hash"] and document["head_hash"] == rows[19]["record_hash"]
    assert (document["done_at_min"], document["done_at_max"]) == (rows[19]["done_at"], rows[10]["done_at"])
    assert document["segment_key"] == "cold/cdr/op-a/000000000011-000000000020.jsonl.gz"


def _manifest_doc(**changes) -> bytes:
    manifest, _ = segment_of(chain_rows("op-a", 5), 1, 4)
    document = {**manifest.to_dict(), **changes}
    return json.dumps({k: v for k, v in document.items() if v is not ...}).encode()


@pytest.mark.parametrize("changes, message", [
    ({"format": "cdr-mediation.cold-segment.v2"}, "not a cdr-mediation.cold-segment.v1"),
    ({"extra": 1}, "members must be exactly"),
    ({"head_hash": ...}, "members must be exactly"),
    ({"record_count": 5}, "record_count"),
    ({"segment_size": 12.0}, "segment_size must be an integer"),
    ({"first_seq": True}, "first_seq must be an integer"),
    ({"segment_key": "cold/cdr/op-a/other.jsonl.gz"}, "segment_key"),
    ({"prev_hash": "1" * 64}, "zero prev_hash"),
    ({"head_hash": "ABC"}, "head_hash is not 64 lowercase hex"),
    ({"done_at_min": "2030-01-01T00:00:00.000Z"}, "done_at_min / done_at_max"),
])
def test_invalid_manifests_are_refused_with_the_reason(changes, message):
    with pytest.raises(ManifestInvalid, match=message):
        SegmentManifest.from_bytes(_manifest_doc(**changes))


def test_a_manifest_with_duplicate_members_is_refused():
    raw = _manifest_doc()
    with pytest.raises(ManifestInvalid, match="duplicate"):
        SegmentManifest.from_bytes(raw[:-1] + b',"first_seq":2}')


def test_a_manifest_is_only_made_for_every_line_of_the_range():
    rows = chain_rows("op-a", 5)
    content = SegmentContent(SegmentRange("op-a", 1, 5))
    for row in rows[:4]:
        content.add(row)
    with pytest.raises(ValueError, match="4 lines written, 5 expected"):
        content.manifest(prev_hash="0" * 64, head_hash=rows[3]["record_hash"],
                         file=SegmentFileDigest("f" * 64, 1, content.content_sha256, content.size))


# -- the check a restore relies on -------------------------------------------------------------

def test_an_intact_segment_verifies():
    manifest, lines = segment_of(chain_rows("op-a", 50), 1, 50)
    check = verify_segment_lines(manifest, lines)
    assert check.ok and check.verified == 50 and check.first_bad_seq is None


def test_a_segment_in_the_middle_verifies_from_its_prev_hash():
    manifest, lines = segment_of(chain_rows("op-a", 50), 21, 40)
    assert verify_segment_lines(manifest, lines).ok


def _tampered(line: bytes, **changes) -> bytes:
    return canonical_bytes({**json.loads(line), **changes}) + b"\n"


def test_a_changed_line_is_named_by_its_chain_seq():
    manifest, lines = segment_of(chain_rows("op-a", 50), 11, 50)
    lines[16] = _tampered(lines[16], amount_minor=500)  # chain_seq 27
    check = verify_segment_lines(manifest, lines)
    assert not check.ok and check.first_bad_seq == 27 and check.verified == 16
    assert "chain_seq 27: hash_mismatch" in check.problem


def test_a_changed_line_with_its_hash_recomputed_breaks_the_next_link():
    manifest, lines = segment_of(chain_rows("op-a", 20), 1, 20)
    entry = {k: v for k, v in json.loads(lines[4]).items() if k != "record_hash"}
    entry["amount_minor"] = 500
    lines[4] = canonical_bytes({**entry, "record_hash": hashlib.sha256(canonical_bytes(entry)).hexdigest()}) + b"\n"
    check = verify_segment_lines(manifest, lines)
    assert check.first_bad_seq == 6 and "prev_hash_mismatch" in check.problem


@pytest.mark.parametrize("edit, bad_seq, kind", [
    (lambda lines: lines.pop(9), 10, "gap"),  # a deleted line
    (lambda lines: lines.insert(5, lines[4]), 6, "duplicate_seq"),  # a repeated line
    (lambda lines: lines.__setitem__(3, b'{"chain_seq": 4, "chain_seq": 4}\n'), 4, "malformed_row"),
    (lambda lines: lines.__setitem__(3, b"not json\n"), 4, "malformed_row"),
    (lambda lines: lines.pop(), 20, "truncated"),  # the last line is gone
])
def test_missing_repeated_and_unreadable_lines_are_named(edit, bad_seq, kind):
    manifest, lines = segment_of(chain_rows("op-a", 20), 1, 20)
    edit(lines)
    check = verify_segment_lines(manifest, lines)
    assert (check.ok, check.first_bad_seq) == (False, bad_seq)
    assert f"chain_seq {bad_seq}: {kind}" in check.problem


def test_an_unparseable_line_says_why():
    manifest, lines = segment_of(chain_rows("op-a", 5), 1, 5)
    lines[2] = b'{"a": 1, "a": 2}\n'
    assert "duplicate_key" in verify_segment_lines(manifest, lines).problem


def test_lines_beyond_the_head_are_refused():
    rows = chain_rows("op-a", 21)
    manifest, lines = segment_of(rows, 1, 20)
    check = verify_segment_lines(manifest, lines + [segment_line(rows[20])])
    assert check.first_bad_seq == 21 and "continue after" in check.problem


def test_a_consistently_rewritten_tail_does_not_reach_the_manifests_head():
    rows = chain_rows("op-a", 10)
    manifest, _ = segment_of(rows, 1, 10)
    forged = chain_rows("op-a", 10, minutes=[0, 1, 2, 3, 4, 5, 6, 7, 8, 99])  # last entry rewritten, re-hashed
    check = verify_segment_lines(manifest, [segment_line(row) for row in forged])
    assert check.first_bad_seq == 10 and "head_mismatch" in check.problem


def test_a_segment_that_does_not_continue_from_the_stated_prev_hash_is_refused():
    manifest, lines = segment_of(chain_rows("op-a", 30), 11, 30)
    wrong_start = dataclasses.replace(manifest, prev_hash="a" * 64)
    check = verify_segment_lines(wrong_start, lines)
    assert check.first_bad_seq == 11 and "prev_hash_mismatch" in check.problem


def test_an_intact_chain_in_other_bytes_is_not_the_archived_content():
    manifest, lines = segment_of(chain_rows("op-a", 5), 1, 5)
    respaced = [json.dumps(json.loads(line)).encode() + b"\n" for line in lines]  # same JSON, not RFC 8785
    check = verify_segment_lines(manifest, respaced)
    assert not check.ok and check.first_bad_seq is None and "content is" in check.problem
