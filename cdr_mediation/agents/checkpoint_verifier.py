"""Checkpoint verification: every export file's recorded checkpoints against the stored rows, and
their signatures against the trust anchor (docs/verification.md §2).

For each export whose BUILT / REBUILT step recorded a checkpoint:

1. the file's rows are read with `export_build.file_rows` — the one definition of what a file
   holds, shared with the build — and fed to a `CheckpointBuilder` exactly as the build feeds
   it; the recomputed checkpoint must equal every recorded generation on every member the rows
   and the export record determine (`domain/verification.checkpoint_differences`);
2. each generation's SIGNED step must hold a CMS whose signer chains to the trust anchor
   (CDR_HSM_CA_CERT) at the cut-off, that was made at the cut-off, for the ZIP that was built
   (checked where the CMS digest is SHA-256), and a checkpoint signature by that signer's key
   over the recorded checkpoint's RFC 8785 bytes (`infra/cms_verify`).

A file with rows released to the cold tier cannot be recomputed from PostgreSQL: it is reported
`skipped` with the reason (`cdrmed archive verify` checks the archived segments), not as a break.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography import x509

from cdr_mediation.agents.export_build import ExportBuildError, file_rows
from cdr_mediation.domain.cdr import format_utc
from cdr_mediation.domain.checkpoint import Checkpoint, CheckpointBuilder, CheckpointError
from cdr_mediation.domain.day_close import DayClosed
from cdr_mediation.domain.export_config import day_cut_off
from cdr_mediation.domain.verification import (
    CheckpointStatus,
    CheckpointVerdict,
    FileGeneration,
    checkpoint_differences,
    file_generations,
)
from cdr_mediation.infra.cms_verify import VerificationError, verify_checkpoint, verify_detached_signer
from cdr_mediation.infra.postgres.cold_segment_store import cold_head
from cdr_mediation.infra.postgres.verification_store import ExportEvidence, exports_with_checkpoints

log = logging.getLogger(__name__)


async def verify_stored_checkpoints(conn, trust_anchors: Sequence[x509.Certificate],
                                    operator_ids: list[str] | None = None) -> list[CheckpointVerdict]:
    """A verdict for every export file of these operators (or all) that recorded a checkpoint,
    by operator and day."""
    verdicts = []
    cold_seq: dict[str, int] = {}
    for export in await exports_with_checkpoints(conn, operator_ids):
        if export.operator_id not in cold_seq:
            cold_seq[export.operator_id] = (await cold_head(conn, export.operator_id)).chain_seq
        verdicts.append(await verify_export(conn, export, trust_anchors, cold_through_seq=cold_seq[export.operator_id]))
    return verdicts


async def verify_export(conn, export: ExportEvidence, trust_anchors: Sequence[x509.Certificate], *,
                        cold_through_seq: int) -> CheckpointVerdict:
    def verdict(status: CheckpointStatus, detail: str | None = None) -> CheckpointVerdict:
        return CheckpointVerdict(export.operator_id, export.day, export.file_name, status, detail)

    generations = file_generations(export.steps)
    try:
        closed = DayClosed.from_dict(export.day_closed)
    except (KeyError, TypeError, ValueError) as exc:
        return verdict(CheckpointStatus.MISMATCH, f"the export's closed-day record is unreadable: {exc!r}")
    first_seqs = [g.checkpoint.get("first_chain_seq") for g in generations]
    released = [seq for seq in first_seqs if isinstance(seq, int) and seq <= cold_through_seq]
    if released:
        return verdict(CheckpointStatus.SKIPPED, f"rows from chain_seq {min(released)} were released to the cold "
                                                 f"tier (through chain_seq {cold_through_seq}): not recomputable "
                                                 "from PostgreSQL; `cdrmed archive verify` checks the segments")
    try:
        recomputed = (await recompute_checkpoint(conn, closed, export.file_name)).to_dict()
    except CheckpointError as exc:  # rows the build itself would have refused
        return verdict(CheckpointStatus.MISMATCH, f"the stored rows do not make a file: {exc}")
    except ExportBuildError as exc:  # which rows the file holds cannot be told (an earlier file is unknown)
        return verdict(CheckpointStatus.MISMATCH, f"the file's content cannot be determined: {exc}")

    problems = []
    for generation in generations:
        named = f"step {generation.step}"
        # data_sha256 is not a function of the rows alone (docs/verification.md): taken as recorded.
        differences = checkpoint_differences(generation.checkpoint, recomputed)
        problems += [f"{named} checkpoint {line}" for line in differences]
        if generation.signed is not None:
            problem = signature_problem(generation, closed.day, trust_anchors)
            if problem is not None:
                problems.append(f"{named} signature: {problem}")
    if problems:
        return verdict(CheckpointStatus.MISMATCH, "; ".join(problems))
    return verdict(CheckpointStatus.OK)


async def recompute_checkpoint(conn, closed: DayClosed, file_name: str) -> Checkpoint:
    """The checkpoint of the file's stored rows, built as `build_day_export` builds it; its
    `data_sha256` is left empty (the TAP file is not written here). `CheckpointError` when the
    rows cannot make a file (an unknown status or record type, another currency …)."""
    builder = CheckpointBuilder(closed.operator_id, closed.day)
    rows = file_rows(conn, closed)
    try:
        async for row in rows:
            try:
                builder.add(row, row["record_hash"])
            except CheckpointError:
                raise
            except (KeyError, TypeError, ValueError) as exc:  # a value no build could have counted
                raise CheckpointError(f"chain_seq {row['chain_seq']}: {type(exc).__name__}: {exc}") from None
    finally:
        await rows.aclose()
    return builder.finish(file_name=file_name, file_sequence=closed.day_sequence,
                          cut_off=format_utc(day_cut_off(closed.day)), data_sha256="")


def signature_problem(generation: FileGeneration, day: str, trust_anchors: Sequence[x509.Certificate]) -> str | None:
    """Why the SIGNED step of a generation does not prove its checkpoint, or None when it does."""
    signed: Mapping[str, Any] = generation.signed or {}
    try:
        if signed.get("zip_sha256") != generation.zip_sha256:
            return f"signs ZIP {signed.get('zip_sha256')!r}, the build recorded {generation.zip_sha256!r}"
        verified = verify_detached_signer(base64.b64decode(signed["cms_base64"], validate=True), trust_anchors)
        cut_off = day_cut_off(day)
        if verified.signing_time != cut_off:
            return f"CMS signing time {verified.signing_time.isoformat()} is not the cut-off {cut_off.isoformat()}"
        if verified.profile == "ecdsa-p256" and verified.message_digest.hex() != generation.zip_sha256:
            return "the CMS signs other bytes than the ZIP that was built"
        checkpoint_bytes = Checkpoint.from_dict(generation.checkpoint).canonical_bytes()
        verify_checkpoint(checkpoint_bytes, bytes.fromhex(signed["checkpoint_signature"]), signed["checkpoint_key_id"],
                          verified.signer)
    except (VerificationError, CheckpointError) as exc:
        return str(exc)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        return f"the SIGNED step's evidence is unreadable: {type(exc).__name__}: {exc}"
    return None
