"""`cdrmed export rebuild`: build an archived export again from the stored CDRs and compare it,
byte for byte, with what the archive holds (issue 6; the auditor's reproducibility check).

For the export's latest delivered generation the ZIP is built again from PostgreSQL into a
scratch directory (never the exporter's), signed again in the HSM with the file's cut-off as
signing time, and its checkpoint and checkpoint signature taken as the exporter takes them. Each
is compared with the archived object (fetched and verified against its archived SHA-256):

* ZIP, checkpoint: identical bytes, or the rebuild fails;
* CMS signature and checkpoint signature: identical bytes with Ed25519 (deterministic,
  RFC 8032). With ECDSA P-256 a signature is new bytes every time, so the comparison is
  "equivalent": the archived CMS verifies over the rebuilt ZIP against the trust anchor and
  carries the same signing time, and the archived checkpoint signature verifies over the
  rebuilt checkpoint.

The report is one JSON object per compared object plus a summary; the command exits non-zero
unless every object is identical or, for an ECDSA signature, equivalent.
"""

from __future__ import annotations

import filecmp
import hashlib
import tempfile
from pathlib import Path
from typing import Any

from cdr_mediation.agents.export_build import build_day_export, file_sha256
from cdr_mediation.domain.day_close import DayClosed
from cdr_mediation.domain.export_archive import ArchivedKind, delivered_keys
from cdr_mediation.domain.export_config import day_cut_off
from cdr_mediation.domain.export_lifecycle import ExportEvent
from cdr_mediation.infra.cms_verify import verify_checkpoint, verify_detached_file
from cdr_mediation.infra.postgres.export_store import export_row, history


async def rebuild_and_compare(exporter, operator_id: str, day: str) -> list[dict[str, Any]]:
    """The comparison report (see the module docstring); the last entry is the summary."""
    from cdr_mediation.agents.exporter import _checkpoint_member

    row = await exporter.sink.commit(lambda conn: export_row(conn, operator_id, day))
    steps = await exporter.sink.commit(lambda conn: history(conn, operator_id, day))
    delivered = next((s.detail for s in reversed(steps) if s.event is ExportEvent.DELIVERED), None)
    if delivered is None:
        raise LookupError(f"{operator_id} {day}: never delivered, so nothing is archived to compare with")
    keys = delivered_keys(operator_id, day, delivered["sha256"], row.file_name)
    closed = DayClosed.from_dict(row.day_closed)
    report: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cdr-rebuild-") as scratch:
        folder = Path(scratch)
        built = await exporter.sink.commit(lambda conn: build_day_export(conn, exporter.config, closed, folder, split=exporter.split))
        checkpoint = _checkpoint_member(built.zip_path)
        cms, checkpoint_signature = exporter._sign_in_hsm(built.zip_path, checkpoint, day_cut_off(day))
        rebuilt = {ArchivedKind.SIGNATURE: cms, ArchivedKind.CHECKPOINT: checkpoint,
                   ArchivedKind.CHECKPOINT_SIGNATURE: checkpoint_signature.signature}
        # The ZIP may be gigabytes: fetched to a file (verified against its archived SHA-256
        # by the archive) and compared by streaming; the small objects in memory.
        archived_zip = folder / "archived.zip"
        await exporter.archiver.archive.get_file(keys[ArchivedKind.ZIP], archived_zip)
        archived: dict[ArchivedKind, bytes] = {}
        for kind in rebuilt:
            archived[kind], _ = await exporter.archiver.archive.get_bytes(keys[kind])
        deterministic = exporter.identity.profile.value == "ed25519"
        for kind, key in keys.items():
            if kind is ArchivedKind.ZIP:
                entry = {"kind": kind.value, "key": key, "archived_sha256": file_sha256(archived_zip),
                         "rebuilt_sha256": built.zip_sha256,
                         "result": "identical" if filecmp.cmp(archived_zip, built.zip_path, shallow=False) else "differs"}
                report.append(entry)
                continue
            entry = {"kind": kind.value, "key": key, "archived_sha256": hashlib.sha256(archived[kind]).hexdigest(),
                     "rebuilt_sha256": hashlib.sha256(rebuilt[kind]).hexdigest()}
            if archived[kind] == rebuilt[kind]:
                entry["result"] = "identical"
            elif kind is ArchivedKind.SIGNATURE and not deterministic:
                entry["result"] = _equivalent_cms(archived[kind], built.zip_path, cms, exporter)
            elif kind is ArchivedKind.CHECKPOINT_SIGNATURE and not deterministic:
                entry["result"] = _equivalent_checkpoint_signature(archived, built.zip_path, checkpoint,
                                                                   checkpoint_signature, exporter)
            else:
                entry["result"] = "differs"
            report.append(entry)
    ok = all(e["result"] in ("identical", "equivalent") for e in report)
    report.append({"summary": True, "operator_id": operator_id, "day": day, "file_name": row.file_name,
                   "profile": exporter.identity.profile.value, "ok": ok})
    return report


def _equivalent_cms(archived_cms: bytes, zip_path: Path, rebuilt_cms: bytes, exporter) -> str:
    try:
        old = verify_detached_file(archived_cms, zip_path, exporter.anchors)
        new = verify_detached_file(rebuilt_cms, zip_path, exporter.anchors)
    except Exception:  # noqa: BLE001 - any verification failure means the archived CMS does not cover these bytes
        return "differs"
    return "equivalent" if old.signing_time == new.signing_time else "differs"


def _equivalent_checkpoint_signature(archived, zip_path: Path, checkpoint: bytes, rebuilt_signature, exporter) -> str:
    try:
        signer = verify_detached_file(archived[ArchivedKind.SIGNATURE], zip_path, exporter.anchors).signer
        verify_checkpoint(checkpoint, archived[ArchivedKind.CHECKPOINT_SIGNATURE], rebuilt_signature.key_id, signer)
    except Exception:  # noqa: BLE001 - see above
        return "differs"
    return "equivalent"
