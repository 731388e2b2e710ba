"""An export file's checkpoint: what it states about its records, and the bytes that get signed."""

from __future__ import annotations

import dataclasses

import pytest
import rfc8785

from cdr_mediation.domain.checkpoint import (
    CHECKPOINT_FORMAT,
    NO_HEAD_HASH,
    Checkpoint,
    CheckpointBuilder,
    CheckpointError,
)
from cdr_mediation.domain.merkle import EMPTY_ROOT, merkle_root, verify_inclusion, inclusion_proof
from cdr_mediation.domain.rollup import recompute_rollups

from .test_rollup import OP, Chain, at

DAY = "2026-04-10"
FILE = {"file_name": "CDOPAAAREGUL00007", "file_sequence": 7, "cut_off": "2026-04-11T02:00:00.000Z",
        "data_sha256": "ab" * 32}


def _entries():
    chain = Chain()
    entries = [chain.cdr(at(h, 2 * h), status=status, segments=1 + h % 3)
               for h, status in zip(range(9, 21), ["DELIVERED", "UNDELIVERED", "EXPIRED", "DELIVERED", "REJECTED",
                                                    "UNKNOWN", "DELIVERED", "DELIVERED", "EXPIRED", "DELIVERED",
                                                    "UNDELIVERED", "DELIVERED"])]
    entries.append(chain.adjustment("VOID", entries[0][0])[:2])
    entries.append(chain.adjustment("CORRECT", entries[3][0], amount_minor=1, tax_minor=0)[:2])
    return entries


def _build(entries) -> Checkpoint:
    builder = CheckpointBuilder(OP, DAY)
    for entry, digest in entries:
        builder.add(entry, digest)
    return builder.finish(**FILE)


def test_it_states_count_bounds_head_and_the_merkle_root_of_its_records() -> None:
    entries = _entries()
    checkpoint = _build(entries)
    hashes = [digest for _, digest in entries]
    assert checkpoint.record_count == len(entries) == 14
    assert (checkpoint.first_chain_seq, checkpoint.last_chain_seq) == (1, 14)
    assert checkpoint.head_hash == hashes[-1]
    assert checkpoint.merkle_root == merkle_root(hashes)
    # One record's inclusion is provable against the checkpoint alone.
    assert verify_inclusion(hashes[5], 5, checkpoint.record_count, inclusion_proof(hashes, 5), checkpoint.merkle_root)


def test_without_adjustments_its_totals_are_the_rollups_of_the_same_records() -> None:
    entries = _entries()[:-2]
    totals = _build(entries).totals
    hours = recompute_rollups([entry for entry, _ in entries]).values()
    assert totals["currency"] == "EUR"
    for field in ("records", "billable_records", "billable_segments", "amount_minor", "tax_minor"):
        assert totals[field] == sum(getattr(h, field) for h in hours), field
    assert totals["counts"] == {s: sum(h.counts[s] for h in hours) for s in totals["counts"]}
    assert totals["adjustments"] == {"VOID": 0, "CORRECT": 0}


def test_with_adjustments_amounts_are_what_the_file_charges_and_counts_are_its_originals() -> None:
    """A file's amounts are the sums of its records' charges — what the TAP file's audit control
    information states (a CORRECT charges its corrected amount, a VOID nothing) — while counts
    describe its original CDRs and `adjustments` its VOID / CORRECT entries (docs/adjustments.md)."""
    entries = _entries()
    totals = _build(entries).totals
    originals = [e for e, _ in entries if e["record_type"] == "CDR"]
    assert totals["records"] == len(originals) == 12
    assert totals["adjustments"] == {"VOID": 1, "CORRECT": 1}
    assert totals["amount_minor"] == sum(e["amount_minor"] for e in originals) + 1 > 1
    assert totals["tax_minor"] == sum(e["tax_minor"] for e in originals)


def test_the_signed_bytes_are_rfc8785_and_round_trip() -> None:
    checkpoint = _build(_entries())
    document = checkpoint.to_dict()
    assert document["format"] == CHECKPOINT_FORMAT
    assert checkpoint.canonical_bytes() == rfc8785.dumps(document)
    assert Checkpoint.from_dict(document) == checkpoint
    assert _build(_entries()).canonical_bytes() == checkpoint.canonical_bytes()  # same input, same bytes


@pytest.mark.parametrize("change", [
    {"file_sequence": 8}, {"cut_off": "2026-04-11T02:00:01.000Z"}, {"data_sha256": "cd" * 32},
    {"merkle_root": EMPTY_ROOT}, {"record_count": 13},
])
def test_every_statement_is_in_the_signed_bytes(change) -> None:
    checkpoint = _build(_entries())
    assert dataclasses.replace(checkpoint, **change).canonical_bytes() != checkpoint.canonical_bytes()


def test_an_empty_file_has_the_empty_root_and_no_head() -> None:
    checkpoint = CheckpointBuilder(OP, DAY).finish(**FILE)
    assert (checkpoint.record_count, checkpoint.first_chain_seq, checkpoint.last_chain_seq) == (0, None, None)
    assert (checkpoint.head_hash, checkpoint.merkle_root) == (NO_HEAD_HASH, EMPTY_ROOT)
    assert checkpoint.totals["records"] == 0 and checkpoint.totals["currency"] is None


def test_records_need_not_be_contiguous_but_must_increase() -> None:
    entries = _entries()
    day_file = entries[:4] + entries[6:]  # two records of another day left out: still one file
    assert _build(day_file).record_count == 12
    builder = CheckpointBuilder(OP, DAY)
    builder.add(*entries[3])
    for repeated_or_earlier in (entries[3], entries[1]):
        with pytest.raises(CheckpointError, match="increasing chain order"):
            builder.add(*repeated_or_earlier)


def test_foreign_or_malformed_entries_are_refused() -> None:
    entry, digest = _entries()[0]
    cases = [
        ({**entry, "operator_id": "op-b"}, digest, "in the file of"),
        ({**entry, "record_type": "REFUND"}, digest, "unknown record_type"),
    ]
    for bad, bad_digest, message in cases:
        with pytest.raises(CheckpointError, match=message):
            CheckpointBuilder(OP, DAY).add(bad, bad_digest)
    with pytest.raises(ValueError):
        CheckpointBuilder(OP, DAY).add(entry, "not-a-hash")
    builder = CheckpointBuilder(OP, DAY)
    builder.add(entry, digest)
    second, second_digest = _entries()[1]
    with pytest.raises(CheckpointError, match="currency"):
        builder.add({**second, "currency": "USD"}, second_digest)


def test_a_document_with_missing_or_extra_members_is_refused() -> None:
    document = _build(_entries()).to_dict()
    for bad in ({k: v for k, v in document.items() if k != "head_hash"}, {**document, "note": "x"},
                {**document, "format": "cdr-mediation.checkpoint.v0"}):
        with pytest.raises(CheckpointError):
            Checkpoint.from_dict(bad)


@pytest.mark.parametrize("split", range(0, 15))
def test_a_file_built_in_two_parts_has_the_checkpoint_of_one_pass(split: int) -> None:
    entries = _entries()
    earlier, later = CheckpointBuilder(OP, DAY), CheckpointBuilder(OP, DAY, start=split)
    for entry, digest in entries[:split]:
        earlier.add(entry, digest)
    for entry, digest in entries[split:]:
        later.add(entry, digest)
    earlier.extend(later.part())
    assert earlier.finish(**FILE).canonical_bytes() == _build(entries).canonical_bytes()


def test_a_part_that_does_not_follow_is_refused_and_changes_nothing() -> None:
    entries = _entries()
    earlier = CheckpointBuilder(OP, DAY)
    for entry, digest in entries[:5]:
        earlier.add(entry, digest)
    gap = CheckpointBuilder(OP, DAY, start=6)  # entry 6 would be missing
    for entry, digest in entries[6:]:
        gap.add(entry, digest)
    with pytest.raises(CheckpointError, match="from entry 6 after 5 entries"):
        earlier.extend(gap.part())
    overlap = CheckpointBuilder(OP, DAY, start=5)  # starts again at entry 4's chain_seq
    for entry, digest in entries[4:]:
        overlap.add(entry, digest)
    with pytest.raises(CheckpointError, match="increasing chain order"):
        earlier.extend(overlap.part())
    other = CheckpointBuilder("op-other", DAY, start=5)
    with pytest.raises(CheckpointError, match="a part of 'op-other'"):
        earlier.extend(other.part())
    for entry, digest in entries[5:]:
        earlier.add(entry, digest)
    assert earlier.finish(**FILE) == _build(entries)
