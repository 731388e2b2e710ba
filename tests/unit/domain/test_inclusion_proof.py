"""The inclusion proof model: the document it makes, the pieces it refuses, and which file
generation a proof names — pure, no database, no keys (signatures are carried, not checked)."""

from __future__ import annotations

import base64
import json

import pytest

from cdr_mediation.codecs.canonical_json import canonical_bytes
from cdr_mediation.domain.checkpoint import CheckpointBuilder
from cdr_mediation.domain.export_lifecycle import ExportEvent as E
from cdr_mediation.domain.inclusion_proof import (
    PROOF_FORMAT,
    FileGeneration,
    ProofError,
    build_proof,
    parse_checkpoint,
    proof_from_record_hashes,
    provable_generation,
)
from cdr_mediation.domain.merkle import MerkleTree, verify_inclusion

from .test_rollup import OP, Chain, at

DAY = "2026-04-10"
FILE = {"file_name": "CDOPAAAREGUL00007", "file_sequence": 7, "cut_off": "2026-04-11T00:00:00.000Z",
        "data_sha256": "ab" * 32}
PEM = "-----BEGIN CERTIFICATE-----\nTUlJQg==\n-----END CERTIFICATE-----\n"
SIGNED = {"checkpoint_signature": b"\x07" * 64, "signing_profile": "ed25519", "key_id": "cd" * 32,
          "certificates": [PEM]}


def day_file(count: int = 11):
    """A day's records in chain order (with one entry of the next day between them, which the
    file does not hold) and the checkpoint bytes of the file."""
    chain = Chain()
    records = []
    for n in range(count):
        records.append(chain.cdr(at(1 + n % 22, (5 * n) % 60, n % 60)))
        if n == 4:
            chain.cdr(at(0, 1, day=11))  # chain_seq 6: not in this file
    builder = CheckpointBuilder(OP, DAY)
    for entry, digest in records:
        builder.add(entry, digest)
    return records, builder.finish(**FILE).canonical_bytes()


RECORDS, CHECKPOINT = day_file()
HASHES = [h for _, h in RECORDS]


def make(index: int = 7, **changes):
    entry, digest = RECORDS[index]
    pieces = dict(entry=entry, record_hash=digest, leaf_index=index, tree_size=len(RECORDS),
                  audit_path=MerkleTree(HASHES).inclusion_proof(index), checkpoint=CHECKPOINT, **SIGNED)
    pieces.update(changes)
    return build_proof(**pieces)


class TestDocument:
    def test_members_and_values(self) -> None:
        proof = make(7)
        doc = proof.to_dict()
        assert list(doc) == ["format", "cdr_id", "operator_id", "file_name", "entry", "record_hash", "leaf_index",
                             "tree_size", "audit_path", "checkpoint", "checkpoint_signature", "signature_algorithm",
                             "key_id", "certificates"]
        entry, digest = RECORDS[7]
        assert doc["format"] == PROOF_FORMAT == "cdr-mediation.inclusion-proof.v1"
        assert (doc["cdr_id"], doc["operator_id"], doc["file_name"]) == (entry["cdr_id"], OP, FILE["file_name"])
        assert doc["entry"] == entry and doc["record_hash"] == digest
        assert (doc["leaf_index"], doc["tree_size"]) == (7, 11) and entry["chain_seq"] == 9  # seq 6 is not here
        assert base64.b64decode(doc["checkpoint"], validate=True) == CHECKPOINT  # the signed bytes, exactly
        assert base64.b64decode(doc["checkpoint_signature"]) == b"\x07" * 64
        assert (doc["signature_algorithm"], doc["key_id"], doc["certificates"]) == ("ed25519", "cd" * 32, [PEM])
        root = json.loads(CHECKPOINT)["merkle_root"]
        assert verify_inclusion(digest, 7, 11, doc["audit_path"], root)

    def test_json_is_deterministic_and_reads_back_to_the_document(self) -> None:
        text = make(3).to_json()
        assert text == make(3).to_json() and text.endswith("}\n")
        assert json.loads(text) == make(3).to_dict()
        assert text.index('"audit_path"') < text.index('"cdr_id"')  # sorted keys

    def test_ecdsa_profile_names_the_hash(self) -> None:
        assert make(signing_profile="ecdsa-p256").signature_algorithm == "ecdsa-p256-sha256"

    def test_from_all_record_hashes_finds_the_leaf(self) -> None:
        for index, (entry, digest) in enumerate(RECORDS):
            proof = proof_from_record_hashes(HASHES, entry=entry, record_hash=digest, checkpoint=CHECKPOINT, **SIGNED)
            assert proof == make(index)

    def test_single_record_file_has_an_empty_path(self) -> None:
        records, checkpoint = day_file(1)
        (entry, digest), = records
        proof = proof_from_record_hashes([digest], entry=entry, record_hash=digest, checkpoint=checkpoint, **SIGNED)
        assert (proof.leaf_index, proof.tree_size, proof.audit_path) == (0, 1, ())


class TestRefused:
    """Pieces that would make a proof that cannot verify are refused, saying which."""

    def test_entry_not_matching_its_hash(self) -> None:
        entry, _ = RECORDS[7]
        with pytest.raises(ProofError, match="does not hash to record_hash"):
            make(entry={**entry, "amount_minor": entry["amount_minor"] + 1})

    def test_wrong_leaf_index_or_path(self) -> None:
        with pytest.raises(ProofError, match="audit path of leaf 6"):
            make(7, leaf_index=6)
        with pytest.raises(ProofError, match="audit path"):
            make(7, audit_path=MerkleTree(HASHES).inclusion_proof(7)[:-1])

    def test_tree_size_other_than_the_checkpoint_count(self) -> None:
        with pytest.raises(ProofError, match="tree_size 12, the checkpoint counts 11"):
            make(tree_size=12)

    def test_entry_outside_the_file(self) -> None:
        _, other_checkpoint = day_file(3)  # a file of the first three records only
        with pytest.raises(ProofError, match="chain_seq 9 is outside the file's 1..3"):
            make(7, checkpoint=other_checkpoint, tree_size=3)

    def test_entry_of_another_operator_or_not_in_the_file(self) -> None:
        chain = Chain("op-b")
        entry, digest = chain.cdr(at(3))
        with pytest.raises(ProofError, match="entry of 'op-b', checkpoint of 'op-a'"):
            make(entry=entry, record_hash=digest)
        # An entry of another day may be carried by a file (an adjustment, a late CDR), so the
        # day proves nothing: the inclusion does, and this one is not in the file.
        entry, digest = Chain().cdr(at(3, day=11))
        with pytest.raises(ProofError, match="does not lead to the checkpoint's merkle_root"):
            make(entry=entry, record_hash=digest)

    def test_checkpoint_bytes_that_were_not_what_is_signed(self) -> None:
        pretty = json.dumps(json.loads(CHECKPOINT), indent=1).encode()
        with pytest.raises(ProofError, match="not in canonical form"):
            make(checkpoint=pretty)
        with pytest.raises(ProofError, match="not a checkpoint"):
            make(checkpoint=canonical_bytes({"format": "something else"}))
        with pytest.raises(ProofError, match="not a checkpoint"):
            make(checkpoint=CHECKPOINT[:-1])

    @pytest.mark.parametrize("changes, message", [
        ({"signing_profile": "rsa"}, "signing profile 'rsa'"),
        ({"key_id": "CD" * 32}, "key_id must be 64 lowercase hex"),
        ({"checkpoint_signature": b""}, "no checkpoint signature"),
        ({"certificates": []}, "certificates must be"),
        ({"certificates": ["not a certificate"]}, "certificates must be"),
    ])
    def test_signature_pieces_of_the_wrong_form(self, changes, message) -> None:
        with pytest.raises(ProofError, match=message):
            make(**changes)

    def test_record_not_in_the_file(self) -> None:
        with pytest.raises(ProofError, match="not among the file's records"):
            proof_from_record_hashes(HASHES[1:], entry=RECORDS[0][0], record_hash=RECORDS[0][1],
                                     checkpoint=CHECKPOINT, **SIGNED)

    def test_parse_checkpoint_round_trips(self) -> None:
        assert parse_checkpoint(CHECKPOINT).canonical_bytes() == CHECKPOINT


class TestProvableGeneration:
    """Which generation a proof names: latest delivered, else latest signed, else none."""

    CP1, CP2 = {"merkle_root": "1"}, {"merkle_root": "2"}

    def built(self, sha, checkpoint, event=E.BUILT):
        return event, {"file_name": "F", "zip_sha256": sha, "checkpoint": checkpoint}

    def signed(self, sha):
        return E.SIGNED, {"zip_sha256": sha, "checkpoint_signature": sha * 2, "profile": "ed25519"}

    def delivered(self, sha, event=E.DELIVERED):
        return event, {"sha256": sha, "channel": "sftp"}

    def test_nothing_signed_yet(self) -> None:
        assert provable_generation([]) is None
        assert provable_generation([self.built("a", self.CP1)]) is None

    def test_signed_then_delivered(self) -> None:
        steps = [self.built("a", self.CP1), self.signed("a")]
        assert provable_generation(steps) == FileGeneration("a", self.CP1, steps[1][1], delivered=False)
        steps.append(self.delivered("a"))
        assert provable_generation(steps) == FileGeneration("a", self.CP1, steps[1][1], delivered=True)

    def test_a_rebuild_counts_once_delivered_and_until_then_the_file_the_regulator_holds(self) -> None:
        steps = [self.built("a", self.CP1), self.signed("a"), self.delivered("a"), (E.REJECTED, {}),
                 self.built("b", self.CP2, E.REBUILT)]
        assert provable_generation(steps).zip_sha256 == "a"
        steps.append(self.signed("b"))
        assert provable_generation(steps).zip_sha256 == "a"  # b is signed, but a is what was delivered
        steps.append(self.delivered("b", E.REDELIVERED))
        generation = provable_generation(steps)
        assert (generation.zip_sha256, generation.checkpoint, generation.delivered) == ("b", self.CP2, True)

    def test_steps_naming_other_bytes_do_not_count(self) -> None:
        steps = [self.built("a", self.CP1), self.signed("x")]
        assert provable_generation(steps) is None
        steps += [self.signed("a"), self.delivered("x")]
        assert provable_generation(steps).delivered is False

    def test_the_latest_signature_of_the_same_bytes_wins(self) -> None:
        steps = [self.built("a", self.CP1), self.signed("a"), (E.DEADLINE_PASSED, {}), (E.RESUMED, {}),
                 self.built("a", self.CP1), (E.SIGNED, {"zip_sha256": "a", "checkpoint_signature": "new"})]
        assert provable_generation(steps).signed["checkpoint_signature"] == "new"

    def test_signed_before_any_build_is_ignored(self) -> None:
        assert provable_generation([self.signed("a")]) is None
