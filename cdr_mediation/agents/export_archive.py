"""Archiving what was delivered to the regulator, and what it answered (issue 6, docs/archive.md).

The DELIVERED step names, in its evidence (`archive_keys`), the four objects of the generation
it delivered (`domain/export_archive.py`); an ACKED or REJECTED step names the answer's object.
The exporter archives them right after recording the step; `archive_pending` (on every
follow-up poll) archives whatever a step names and the `export_archive` table does not hold yet,
so an S3 outage only delays the archive: nothing is lost, nothing is deleted, and the failures
are counted (`cdr_archive_failures_total{kind}`, shared with the cold tier) for the alert. An object counts as archived
only once the archive read it back and checked its SHA-256 and COMPLIANCE retention
(`infra/archive`), and then its row is written.

The bytes come from where they are certain: the ZIP and the signature from this worker's export
directory if their digests are the recorded ones (the ZIP is built again otherwise, and must
give the recorded bytes), the signature otherwise from the SIGNED step (which keeps the CMS
itself), the checkpoint from inside the ZIP, its signature and the answers from their steps.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import Counter

from cdr_mediation.domain.day_close import DayClosed
from cdr_mediation.domain.export_archive import ArchivedKind, kind_of
from cdr_mediation.domain.export_config import day_cut_off
from cdr_mediation.domain.export_lifecycle import ExportEvent
from cdr_mediation.domain.retention import retain_until
from cdr_mediation.infra.archive import ArchiveError, ArchivedObject, ObjectLockArchive
from cdr_mediation.infra.archive.metrics import ARCHIVE_FAILURES, failure_kind
from cdr_mediation.infra.postgres.export_store import (
    ExportStep,
    export_row,
    history,
    missing_archive_keys,
    record_archived,
)

log = logging.getLogger(__name__)

ARCHIVED = Counter("cdr_export_archived_objects_total", "Export objects archived and verified", ["kind", "outcome"])


class NotAtHand(RuntimeError):
    """The bytes an archive key names cannot be produced on this worker."""


class ExportArchiver:
    def __init__(self, archive: ObjectLockArchive, exporter, retention_days: int) -> None:
        self.archive = archive
        self.exporter = exporter
        self.sink = exporter.sink
        self.retention_days = retention_days

    async def archive_keys(self, operator_id: str, day: str, keys: Sequence[str]) -> bool:
        """Archive the objects `keys` name that are not archived yet; True if all of them are now."""
        missing = await self.sink.commit(lambda conn: missing_archive_keys(conn, keys))
        if not missing:
            return True
        row = await self.sink.commit(lambda conn: export_row(conn, operator_id, day))
        steps = await self.sink.commit(lambda conn: history(conn, operator_id, day))
        closed = DayClosed.from_dict(row.day_closed)
        until = retain_until(day_cut_off(day), self.retention_days)
        complete = True
        for key in missing:
            kind = kind_of(key, row.file_name)
            try:
                archived = await self._put(closed, row.file_name, steps, key, kind, until)
            except (ArchiveError, NotAtHand) as exc:
                complete = False
                ARCHIVE_FAILURES.labels(kind="not_at_hand" if isinstance(exc, NotAtHand) else failure_kind(exc)).inc()
                log.error("export object not archived; retried at the next poll", extra={
                    "operator_id": operator_id, "day": day, "key": key, "error": str(exc),
                    "retryable": getattr(exc, "retryable", False)})
                continue
            zip_sha256 = key.split("/")[3]
            await self.sink.commit(lambda conn: record_archived(conn, operator_id, day, zip_sha256, kind.value, archived))
            ARCHIVED.labels(kind=kind.value, outcome=archived.outcome.value).inc()
        return complete

    async def archive_pending(self) -> None:
        """Archive everything a recorded step names and the archive table does not hold yet."""
        pending = await self.sink.commit(_pending)
        for (operator_id, day), keys in pending.items():
            await self.archive_keys(operator_id, day, keys)

    async def _put(self, closed: DayClosed, name: str, steps: list[ExportStep], key: str, kind: ArchivedKind,
                   until: dt.datetime) -> ArchivedObject:
        zip_sha256 = key.split("/")[3]
        if kind is ArchivedKind.ANSWER:
            answer_name = key.rsplit("/", 1)[-1]
            data = next((base64.b64decode(s.detail["answer"]["data_base64"]) for s in reversed(steps)
                         if s.detail.get("answer", {}).get("name") == answer_name
                         and key in s.detail.get("archive_keys", ())), None)
            if data is None:
                raise NotAtHand(f"{key}: no recorded answer holds these bytes")
            return await self.archive.put_bytes(key, data, retain_until=until)
        signed = next((s.detail for s in reversed(steps)
                       if s.event is ExportEvent.SIGNED and s.detail.get("zip_sha256") == zip_sha256), None)
        if kind is ArchivedKind.CHECKPOINT_SIGNATURE:
            if signed is None:
                raise NotAtHand(f"{key}: no SIGNED step for ZIP {zip_sha256}")
            return await self.archive.put_bytes(key, bytes.fromhex(signed["checkpoint_signature"]), retain_until=until)
        zip_path = await self._zip_at_hand(closed, name, zip_sha256)
        if kind is ArchivedKind.ZIP:
            return await self.archive.put_file(key, zip_path, retain_until=until)
        if kind is ArchivedKind.CHECKPOINT:
            from cdr_mediation.agents.exporter import _checkpoint_member

            return await self.archive.put_bytes(key, _checkpoint_member(zip_path), retain_until=until)
        delivered = next(s.detail for s in reversed(steps)
                         if s.detail.get("archive_keys") and key in s.detail["archive_keys"])
        return await self.archive.put_bytes(key, self._signature(zip_path, delivered, signed), retain_until=until)

    async def _zip_at_hand(self, closed: DayClosed, name: str, zip_sha256: str) -> Path:
        from cdr_mediation.agents.export_build import file_sha256

        path = self.exporter.out_dir / closed.operator_id / f"{name}.zip"
        if path.exists() and file_sha256(path) == zip_sha256:
            return path
        path, built_sha256 = await self.exporter._built_zip(closed, name)
        if built_sha256 != zip_sha256:
            raise NotAtHand(f"{name}: the ZIP {zip_sha256} is an earlier generation; only {built_sha256} is built now")
        return path

    @staticmethod
    def _signature(zip_path: Path, delivered: dict, signed: dict | None) -> bytes:
        from cdr_mediation.agents.export_build import file_sha256

        wanted = delivered["signature"]["sha256"]
        local = zip_path.with_name(zip_path.name + ".p7s")
        if local.exists() and file_sha256(local) == wanted:
            return local.read_bytes()
        if signed is not None and signed.get("cms_sha256") == wanted and "cms_base64" in signed:
            return base64.b64decode(signed["cms_base64"])
        raise NotAtHand(f"{zip_path.name}.p7s {wanted} is neither at hand nor recorded")


async def _pending(conn) -> dict[tuple[str, str], list[str]]:
    rows = await conn.fetch(
        "SELECT t.operator_id, t.day, k.key FROM export_transition t "
        "CROSS JOIN LATERAL jsonb_array_elements_text(t.detail->'archive_keys') AS k(key) "
        "WHERE t.detail ? 'archive_keys' AND NOT EXISTS (SELECT 1 FROM export_archive a WHERE a.object_key = k.key) "
        "ORDER BY t.day, t.operator_id, t.step")
    pending: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        keys = pending.setdefault((r["operator_id"], r["day"].isoformat()), [])
        if r["key"] not in keys:
            keys.append(r["key"])
    return pending
