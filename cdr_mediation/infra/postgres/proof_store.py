"""The inclusion proof of one stored CDR, assembled from PostgreSQL (issue 7; docs/proofs.md §4).

Which file holds an entry is the exporter's own rule (`agents/export_build.py`): the file of its
operator and of the UTC day of its `done_at`, if its `chain_seq` is at most the chain head at which
that day closed (`export_file.day_closed.chain_head_seq`); later entries of the day are not in it.
Of that file's generations (`domain.inclusion_proof.provable_generation`) the proof names the
latest one delivered, else the latest one signed.

The pieces: the entry from `cdr`; the checkpoint from the generation's BUILT/REBUILT step (its
canonical bytes are what was signed); the signature, key id and signing certificate chain from
its SIGNED step (certificates out of the CMS kept there); the audit path from the file's record
hashes streamed once in chain order (`StreamingInclusionProof`: O(log n) memory, O(n) hashing
and reading per proof). Before a proof is returned, the streamed root must equal the signed
root and the signature must verify: stored evidence that disagrees with itself is never served
as a proof but reported (`EvidenceMismatch`), because it means tampering or a bug.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from cdr_mediation.domain.checkpoint import Checkpoint
from cdr_mediation.domain.day_close import DayClosed
from cdr_mediation.domain.inclusion_proof import InclusionProof, ProofError, build_proof, provable_generation
from cdr_mediation.domain.merkle import StreamingInclusionProof
from cdr_mediation.infra.cms_verify import VerificationError, public_key_id, verify_checkpoint
from cdr_mediation.infra.postgres.cdr_store import fetch_entry, iter_scope_rows
from cdr_mediation.infra.postgres.export_store import history, stored_file_scope

MAX_CHAIN = 8  # certificates from the signer up; real chains have 2–4


class ProofUnavailable(LookupError):
    """No signed file holds this entry (yet). `reason`: ``unknown_cdr``, ``day_not_exported``,
    ``after_day_close`` or ``not_signed``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class EvidenceMismatch(RuntimeError):
    """The stored entry, record hashes, checkpoint or signature disagree with each other."""


async def assemble_proof(conn, cdr_id: str) -> InclusionProof:
    # One snapshot for every read: the file's rows and its history are append-only, but a
    # consistent view costs nothing and rules out reading a step half-way through its recording.
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await _assemble(conn, cdr_id)


async def _assemble(conn, cdr_id: str) -> InclusionProof:
    stored = await fetch_entry(conn, cdr_id)
    if stored is None:
        raise ProofUnavailable("unknown_cdr", f"no stored CDR {cdr_id} (CDRs past the hot window are in the "
                                              "cold tier: restore them first)")
    record_hash = stored.pop("record_hash")
    entry, operator_id, seq, day = stored, stored["operator_id"], stored["chain_seq"], stored["done_at"][:10]
    holding = await holding_file(conn, stored)
    closed, day = holding.closed, holding.day
    steps = await history(conn, operator_id, day)
    generation = provable_generation((step.event, step.detail) for step in steps)
    if generation is None:
        state = steps[-1].to_state.value if steps else "PENDING"
        raise ProofUnavailable("not_signed", f"{holding.file_name} is {state}: not signed yet")

    checkpoint = Checkpoint.from_dict(generation.checkpoint)
    checkpoint_bytes = checkpoint.canonical_bytes()
    signed = generation.signed
    signature = bytes.fromhex(signed["checkpoint_signature"])
    key_id = signed["checkpoint_key_id"]
    certificates = signer_chain(base64.b64decode(signed["cms_base64"]), key_id)
    try:
        verify_checkpoint(checkpoint_bytes, signature, key_id, certificates[0])
    except VerificationError as exc:
        raise EvidenceMismatch(f"{checkpoint.file_name}: the recorded checkpoint signature does not verify: {exc}") \
            from None

    leaf_index, audit_path = await _audit_path(conn, checkpoint, closed, seq)
    try:
        return build_proof(entry=entry, record_hash=record_hash, leaf_index=leaf_index,
                           tree_size=checkpoint.record_count, audit_path=audit_path, checkpoint=checkpoint_bytes,
                           checkpoint_signature=signature, signing_profile=signed["profile"], key_id=key_id,
                           certificates=[c.public_bytes(serialization.Encoding.PEM).decode("ascii")
                                         for c in certificates])
    except ProofError as exc:
        raise EvidenceMismatch(f"{checkpoint.file_name}, chain_seq {seq}: {exc}") from None


@dataclasses.dataclass(frozen=True)
class HoldingFile:
    """The export file that holds (or will hold) a stored entry."""

    operator_id: str
    day: str
    file_name: str
    closed: DayClosed


async def holding_file(conn, entry: Mapping[str, Any]) -> HoldingFile:
    """The export file of a stored entry (as `fetch_entry` gives it), by the exporter's rule
    (`domain/file_scope.py`): its day's file, or the file that carries it; `ProofUnavailable`
    (``day_not_exported``, ``after_day_close``) when no file holds it yet."""
    operator_id, seq, day = entry["operator_id"], entry["chain_seq"], entry["done_at"][:10]
    export = await conn.fetchrow("SELECT file_name, day_closed FROM export_file WHERE operator_id = $1 AND day = $2",
                                 operator_id, dt.date.fromisoformat(day))
    if export is None:
        raise ProofUnavailable("day_not_exported", f"the day {day} of {operator_id} has not closed for export yet, "
                                                   "so no file holds this CDR")
    closed = DayClosed.from_dict(json.loads(export["day_closed"]))
    if seq > closed.chain_head_seq:
        # It reached the chain after its day's file closed (a late entry, an adjustment): the
        # next file of the operator to close carries it (domain/file_scope.py).
        carrier = await conn.fetchrow(
            "SELECT file_name, day_closed FROM export_file WHERE operator_id = $1 "
            "AND (day_closed->>'chain_head_seq')::bigint >= $2 ORDER BY day_sequence LIMIT 1", operator_id, seq)
        if carrier is None:
            raise ProofUnavailable("after_day_close", f"chain_seq {seq} arrived after {day} closed at chain_seq "
                                                      f"{closed.chain_head_seq}: the next file to close will carry it")
        export, closed = carrier, DayClosed.from_dict(json.loads(carrier["day_closed"]))
    return HoldingFile(operator_id, closed.day, export["file_name"], closed)


async def _audit_path(conn, checkpoint: Checkpoint, closed: DayClosed, seq: int) -> tuple[int, list[str]]:
    """The entry's leaf index and audit path from the file's record hashes, read in one pass."""
    if not checkpoint.record_count:
        raise EvidenceMismatch(f"{checkpoint.file_name} is signed as empty, yet chain_seq {seq} belongs in it")
    proof = StreamingInclusionProof(checkpoint.record_count)
    try:
        scope = await stored_file_scope(conn, closed)  # the file's rows, as the build reads them
        async for row in iter_scope_rows(conn, scope, columns=("chain_seq", "record_hash"), page=20_000):
            proof.add(row["record_hash"], target=row["chain_seq"] == seq)
        leaf_index, path, root = proof.finish()
    except ValueError as exc:  # more or fewer rows than the checkpoint counts, or the entry not among them
        raise EvidenceMismatch(f"{checkpoint.file_name}: the stored rows are not the signed file's: {exc}") from None
    if root != checkpoint.merkle_root:
        raise EvidenceMismatch(f"{checkpoint.file_name}: the stored rows give Merkle root {root}, "
                               f"the signed checkpoint {checkpoint.merkle_root}")
    return leaf_index, path


def signer_chain(cms_der: bytes, key_id: str) -> list[x509.Certificate]:
    """The certificate of the checkpoint key (by `key_id`) and its issuers found in the file's CMS,
    signer first. The CMS carries them as a SET (no order); the root may be absent."""
    try:
        bag = pkcs7.load_der_pkcs7_certificates(cms_der)
    except ValueError as exc:
        raise EvidenceMismatch(f"the recorded CMS cannot be read: {exc}") from None
    signers = [c for c in bag if public_key_id(c) == key_id]
    if len(signers) != 1:
        raise EvidenceMismatch(f"{len(signers)} certificates in the CMS hold key {key_id}; exactly one expected")
    chain = signers
    while len(chain) < MAX_CHAIN and chain[-1].issuer != chain[-1].subject:
        issuer = next((c for c in bag if c not in chain and _issued(chain[-1], c)), None)
        if issuer is None:
            break
        chain.append(issuer)
    return chain


def _issued(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
