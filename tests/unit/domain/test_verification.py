"""What a verification run decides (domain/verification.py): which checkpoint members differ, which
checkpoint each signature signed, and whether a recorded run found an operator broken."""

from __future__ import annotations

import copy

from cdr_mediation.domain.checkpoint import CheckpointBuilder
from cdr_mediation.domain.verification import (
    CheckpointStatus,
    CheckpointVerdict,
    checkpoint_differences,
    file_generations,
    operator_verdicts,
    run_ok,
)

HASHES = ["a" * 64, "b" * 64]


def _checkpoint() -> dict:
    builder = CheckpointBuilder("op-a", "2026-11-03")
    for seq, digest in zip((4, 7), HASHES):
        builder.add({"chain_seq": seq, "operator_id": "op-a", "currency": "EUR", "record_type": "CDR",
                     "status": "DELIVERED", "billable": True, "segments": 2, "amount_minor": 10, "tax_minor": 2},
                    digest)
    return builder.finish(file_name="CDAFGAWATRAA00005", file_sequence=5, cut_off="2026-11-04T00:00:00.000Z",
                          data_sha256="c" * 64).to_dict()


def test_a_recomputation_equal_to_the_record_has_no_differences():
    recorded = _checkpoint()
    assert checkpoint_differences(recorded, copy.deepcopy(recorded)) == []


def test_the_data_files_digest_is_not_compared_it_depends_on_the_configuration_too():
    recomputed = {**_checkpoint(), "data_sha256": ""}
    assert checkpoint_differences(_checkpoint(), recomputed) == []


def test_each_differing_member_is_named_totals_figure_by_figure():
    recorded = _checkpoint()
    recomputed = copy.deepcopy(recorded)
    recomputed["totals"]["amount_minor"] += 1
    recomputed["totals"]["counts"]["DELIVERED"] -= 1
    recomputed["merkle_root"] = "d" * 64
    recomputed["last_chain_seq"] = 8
    assert checkpoint_differences(recorded, recomputed) == [
        "last_chain_seq: recorded 7, recomputed 8",
        f"merkle_root: recorded {recorded['merkle_root']!r}, recomputed {'d' * 64!r}",
        "totals.amount_minor: recorded 20, recomputed 21",
        "totals.counts.DELIVERED: recorded 2, recomputed 1",
    ]


def test_a_member_missing_from_the_record_is_a_difference():
    recorded = _checkpoint()
    del recorded["head_hash"]
    assert checkpoint_differences(recorded, _checkpoint()) == [f"head_hash: recorded None, recomputed {HASHES[1]!r}"]


def test_each_built_checkpoint_is_paired_with_the_signing_that_followed_it():
    first, second = _checkpoint(), {**_checkpoint(), "file_sequence": 6}
    steps = [(1, "built", {"zip_sha256": "z1", "checkpoint": first}), (2, "signed", {"zip_sha256": "z1"}),
             (3, "delivered", {}), (4, "rejected", {}),
             (5, "rebuilt", {"zip_sha256": "z2", "checkpoint": second}), (6, "signed", {"zip_sha256": "z2"}),
             (7, "signed", {"zip_sha256": "late"})]
    generations = file_generations(steps)
    assert [(g.step, g.zip_sha256, g.checkpoint, g.signed) for g in generations] == [
        (1, "z1", first, {"zip_sha256": "z1"}), (5, "z2", second, {"zip_sha256": "z2"})]


def test_a_built_file_not_signed_yet_has_no_signature_to_check():
    [generation] = file_generations([(1, "built", {"zip_sha256": "z1", "checkpoint": _checkpoint()})])
    assert generation.signed is None


def test_a_skipped_file_is_reported_but_is_no_finding():
    skipped = CheckpointVerdict("op-a", "2026-11-03", "CDAFGAWATRAA00005", CheckpointStatus.SKIPPED, "cold tier")
    mismatch = CheckpointVerdict("op-a", "2026-11-03", "CDAFGAWATRAA00005", CheckpointStatus.MISMATCH, "x")
    assert skipped.ok and not mismatch.ok
    assert skipped.to_dict() == {"operator_id": "op-a", "day": "2026-11-03", "file_name": "CDAFGAWATRAA00005",
                                 "ok": True, "status": "skipped", "detail": "cold tier"}
    assert "detail" not in CheckpointVerdict("op-a", "2026-11-03", "F", CheckpointStatus.OK).to_dict()
    assert run_ok([True], [skipped]) and not run_ok([True], [mismatch]) and not run_ok([False], [])


def test_a_run_that_verified_nothing_is_no_success():
    assert not run_ok([], [])


def test_an_operator_is_broken_by_a_chain_break_or_a_checkpoint_mismatch_of_its_own():
    detail = {"ok": False,
              "results": [{"operator_id": "op-a", "ok": True}, {"operator_id": "op-b", "ok": False},
                          {"operator_id": "op-c", "ok": True}],
              "checkpoints": [{"operator_id": "op-a", "status": "skipped"}, {"operator_id": "op-c", "status": "ok"},
                              {"operator_id": "op-c", "status": "mismatch"}, {"operator_id": "op-d", "status": "ok"}]}
    assert operator_verdicts(detail) == {"op-a": True, "op-b": False, "op-c": False, "op-d": True}


def test_rows_recorded_before_checkpoints_were_verified_are_read_by_their_chain_results():
    assert operator_verdicts({"ok": True, "results": [{"operator_id": "op-a", "ok": True}]}) == {"op-a": True}
