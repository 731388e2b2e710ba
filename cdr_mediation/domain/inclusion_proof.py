"""The inclusion proof of one chain entry in a signed export file (issue 7; docs/proofs.md).

A proof lets anyone holding the signer's trust anchor check, offline and without our code, that
one CDR (or adjustment) is exactly as stored in a file the regulator received: the entry hashes to
its `record_hash` (RFC 8785 + SHA-256), that hash is leaf `leaf_index` of the RFC 6962 tree whose
root the file's checkpoint states, and the checkpoint is signed by the export key. The document
format (`cdr-mediation.inclusion-proof.v1`) is a contract; `tools/verify_proof.py` checks it with
the standard library and `cryptography` only.

This module is pure: it assembles a proof from pieces read elsewhere and refuses pieces that do
not fit together (`ProofError`), so we never hand out a proof that cannot verify. The signature
and the certificates are carried, not checked, here: that is cryptography over key material, done
by the caller with `infra/cms_verify.py` before a proof leaves the process.

Also here: which generation of an export file a proof is about (`provable_generation`), a pure
reading of the export's lifecycle history.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from typing import Any, Iterable, Mapping, Sequence

from cdr_mediation.domain.chain import record_hash as hash_of_entry
from cdr_mediation.domain.checkpoint import Checkpoint, CheckpointError
from cdr_mediation.domain.export_lifecycle import ExportEvent
from cdr_mediation.domain.merkle import MerkleTree, verify_inclusion
from cdr_mediation.domain.strict_json import StrictJsonError, loads_strict

PROOF_FORMAT = "cdr-mediation.inclusion-proof.v1"
# Signing profile (CDR_EXPORT_SIGNATURE_PROFILE, the SIGNED step's `profile`) → the proof's name,
# which says what a verifier computes: PureEdDSA over the bytes, or ECDSA over SHA-256 of them.
SIGNATURE_ALGORITHMS = {"ed25519": "ed25519", "ecdsa-p256": "ecdsa-p256-sha256"}

_HEX64 = re.compile(r"[0-9a-f]{64}")
_PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+-----END CERTIFICATE-----\n?")


class ProofError(ValueError):
    """The pieces do not make a proof that verifies; the message says which do not fit."""


@dataclasses.dataclass(frozen=True)
class InclusionProof:
    entry: Mapping[str, Any]  # the chain entry exactly as hashed (docs/chain.md §2)
    record_hash: str
    leaf_index: int  # the entry's position among the file's records (0-based, chain order)
    tree_size: int  # the file's record count
    audit_path: tuple[str, ...]  # RFC 6962 PATH(leaf_index, D[tree_size]), leaf level first
    checkpoint: bytes  # exactly the signed bytes
    checkpoint_signature: bytes
    signature_algorithm: str  # a value of SIGNATURE_ALGORITHMS
    key_id: str  # SHA-256 of the signer's DER SubjectPublicKeyInfo (docs/signing.md §7)
    certificates: tuple[str, ...]  # PEM, the signer's certificate first, then its issuers

    @property
    def cdr_id(self) -> str:
        return self.entry["cdr_id"]

    @property
    def operator_id(self) -> str:
        return self.entry["operator_id"]

    @property
    def signed_checkpoint(self) -> Checkpoint:
        return parse_checkpoint(self.checkpoint)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PROOF_FORMAT,
            "cdr_id": self.cdr_id,
            "operator_id": self.operator_id,
            "file_name": self.signed_checkpoint.file_name,
            "entry": dict(self.entry),
            "record_hash": self.record_hash,
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "audit_path": list(self.audit_path),
            # Base64, not a nested object or a JSON string: the verifier needs the signed bytes
            # themselves, and no JSON tool on the way can re-escape or reorder base64.
            "checkpoint": base64.b64encode(self.checkpoint).decode("ascii"),
            "checkpoint_signature": base64.b64encode(self.checkpoint_signature).decode("ascii"),
            "signature_algorithm": self.signature_algorithm,
            "key_id": self.key_id,
            "certificates": list(self.certificates),
        }

    def to_json(self) -> str:
        """The document as served and as stored in test vectors: sorted keys, two-space indent,
        non-ASCII as UTF-8, one final newline — deterministic, so equal proofs are equal bytes."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def parse_checkpoint(checkpoint: bytes) -> Checkpoint:
    """The checkpoint the bytes state; they must be its canonical (signed) form."""
    try:
        parsed = Checkpoint.from_dict(loads_strict(checkpoint))
    except (StrictJsonError, CheckpointError, AttributeError, TypeError) as exc:
        raise ProofError(f"the checkpoint bytes are not a checkpoint: {exc}") from None
    if parsed.canonical_bytes() != checkpoint:
        raise ProofError("the checkpoint bytes are not in canonical form (RFC 8785), so not what was signed")
    return parsed


def build_proof(*, entry: Mapping[str, Any], record_hash: str, leaf_index: int, tree_size: int,
                audit_path: Sequence[str], checkpoint: bytes, checkpoint_signature: bytes, signing_profile: str,
                key_id: str, certificates: Sequence[str]) -> InclusionProof:
    """A proof from its pieces, checked to fit together (everything but the signature itself)."""
    if hash_of_entry(entry) != record_hash:
        raise ProofError(f"the entry does not hash to record_hash {record_hash}")
    signed = parse_checkpoint(checkpoint)
    seq = entry["chain_seq"]
    if entry["operator_id"] != signed.operator_id:
        raise ProofError(f"entry of {entry['operator_id']!r}, checkpoint of {signed.operator_id!r}")
    # An entry of another day than the file's is carried by it (domain/file_scope.py): the
    # inclusion below is what proves it is in the signed file.
    if signed.record_count != tree_size:
        raise ProofError(f"tree_size {tree_size}, the checkpoint counts {signed.record_count} records")
    if signed.first_chain_seq is None or not signed.first_chain_seq <= seq <= signed.last_chain_seq:
        raise ProofError(f"chain_seq {seq} is outside the file's {signed.first_chain_seq}..{signed.last_chain_seq}")
    if not verify_inclusion(record_hash, leaf_index, tree_size, audit_path, signed.merkle_root):
        raise ProofError(f"the audit path of leaf {leaf_index} does not lead to the checkpoint's merkle_root")
    if signing_profile not in SIGNATURE_ALGORITHMS:
        raise ProofError(f"signing profile {signing_profile!r} is not one of {sorted(SIGNATURE_ALGORITHMS)}")
    if type(key_id) is not str or not _HEX64.fullmatch(key_id):
        raise ProofError("key_id must be 64 lowercase hex digits")
    if not checkpoint_signature:
        raise ProofError("no checkpoint signature")
    if not certificates or not all(_PEM_CERTIFICATE.fullmatch(pem) for pem in certificates):
        raise ProofError("certificates must be one or more PEM certificates, the signer's first")
    return InclusionProof(dict(entry), record_hash, leaf_index, tree_size, tuple(audit_path), bytes(checkpoint),
                          bytes(checkpoint_signature), SIGNATURE_ALGORITHMS[signing_profile], key_id,
                          tuple(certificates))


def proof_from_record_hashes(record_hashes: Sequence[str], *, entry: Mapping[str, Any], record_hash: str,
                             **signed: Any) -> InclusionProof:
    """`build_proof` with the path computed from all the file's record hashes, in chain order
    (whole file in memory: for tests and small files; the store streams, `StreamingInclusionProof`)."""
    try:
        index = list(record_hashes).index(record_hash)
    except ValueError:
        raise ProofError(f"record_hash {record_hash} is not among the file's records") from None
    path = MerkleTree(record_hashes).inclusion_proof(index)
    return build_proof(entry=entry, record_hash=record_hash, leaf_index=index, tree_size=len(record_hashes),
                       audit_path=path, **signed)


# --- Which file generation a proof is about ------------------------------------------------------

_DELIVERING = frozenset({ExportEvent.DELIVERED, ExportEvent.REDELIVERED, ExportEvent.MANUALLY_DELIVERED})


@dataclasses.dataclass(frozen=True)
class FileGeneration:
    """One build of an export file (BUILT, or REBUILT after a rejection) and what happened to it."""

    zip_sha256: str
    checkpoint: Mapping[str, Any]  # Checkpoint.to_dict() as the build step recorded it
    signed: Mapping[str, Any] | None = None  # the latest SIGNED step's detail for these ZIP bytes
    delivered: bool = False


def provable_generation(steps: Iterable[tuple[ExportEvent, Mapping[str, Any]]]) -> FileGeneration | None:
    """The generation a proof names: the latest one delivered to the regulator (the bytes they
    hold), else the latest signed one (a file waiting for its delivery), else None.

    `steps` are an export's (event, detail) in step order. A signature or delivery counts for the
    generation whose ZIP bytes it names, so a rejected file's steps never lend themselves to its
    rebuild."""
    generations: list[FileGeneration] = []
    for event, detail in steps:
        event = ExportEvent(event)
        if event in (ExportEvent.BUILT, ExportEvent.REBUILT):
            generations.append(FileGeneration(detail["zip_sha256"], detail["checkpoint"]))
        elif not generations:
            continue
        elif event is ExportEvent.SIGNED and detail.get("zip_sha256") == generations[-1].zip_sha256:
            generations[-1] = dataclasses.replace(generations[-1], signed=detail)
        elif event in _DELIVERING and detail.get("sha256") == generations[-1].zip_sha256:
            generations[-1] = dataclasses.replace(generations[-1], delivered=True)
    delivered = [g for g in generations if g.delivered and g.signed is not None]
    if delivered:
        return delivered[-1]
    signed = [g for g in generations if g.signed is not None]
    return signed[-1] if signed else None
