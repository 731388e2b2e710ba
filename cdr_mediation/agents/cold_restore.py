"""Bringing cold segments back (`cdrmed archive restore`) and checking them (`cdrmed archive verify`).

A segment counts as verified only when all of these hold:

* the manifest in S3 is byte-identical to the one recorded when the segment was archived
  (`cdr_cold_segment.manifest`), and is a valid v1 manifest;
* the segment file matches its recorded SHA-256 (`ObjectLockArchive.get_file`) and the
  manifest's `segment_sha256` and size;
* its lines recompute to an unbroken chain from the manifest's `prev_hash` at `first_seq - 1` to
  its `head_hash` at `last_seq`, and are exactly the manifest's content (`verify_segment_lines`);
* consecutive segments link: each one's `prev_hash` is the previous one's head hash.

A restore verifies every segment covering the range *before* making any entry available, and
then makes it available either as a file (`--out`: the verified JSON lines of the range, in the
segment line format of docs/archive.md, written under a temporary name and renamed at the end)
or in the `cdr_restored` table (`--into-table cdr_restored`, same columns as `cdr`). Restored
entries never go back into `cdr`: it is append-only and its chain continues after them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from cdr_mediation.agents.cold_tier import check_segment_file
from cdr_mediation.codecs.cold_segment import iter_segment_lines
from cdr_mediation.domain.cold_segment import ManifestInvalid, SegmentCheck, SegmentManifest
from cdr_mediation.domain.strict_json import loads_strict
from cdr_mediation.infra.archive import ObjectLockArchive
from cdr_mediation.infra.postgres import cold_segment_store
from cdr_mediation.infra.postgres.cold_segment_store import ColdSegmentRecord

log = logging.getLogger("cdr_mediation.cold_restore")

SEGMENTS_VERIFIED = Counter("cdr_cold_segments_verified_total", "Archived cold segments downloaded and checked",
                            ["result"])
ROWS_RESTORED = Counter("cdr_cold_rows_restored_total", "Verified archived entries made available again", ["target"])
_RESTORE_BATCH = 10_000


class RestoreRefused(Exception):
    """The range cannot be restored as asked (not archived, or it does not verify)."""

    def __init__(self, message: str, *, first_bad_seq: int | None = None) -> None:
        super().__init__(message)
        self.first_bad_seq = first_bad_seq


@dataclasses.dataclass(frozen=True)
class FetchedSegment:
    record: ColdSegmentRecord
    path: Path
    check: SegmentCheck | None  # None when the manifest itself could not be used
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def first_bad_seq(self) -> int | None:
        if self.check is not None and self.check.first_bad_seq is not None:
            return self.check.first_bad_seq
        return None

    def to_dict(self) -> dict[str, Any]:
        report: dict[str, Any] = {"operator_id": self.record.operator_id, "first_seq": self.record.first_seq,
                                  "last_seq": self.record.last_seq, "ok": self.ok}
        if not self.ok:
            report["problem"] = self.problem
            if self.first_bad_seq is not None:
                report["first_bad_seq"] = self.first_bad_seq
        return report


async def fetch_segment(archive: ObjectLockArchive, record: ColdSegmentRecord, work_dir: Path) -> FetchedSegment:
    """Download one segment into `work_dir` and check it (see the module docstring).

    Archive errors (S3 down, an object missing or not matching its recorded digest) propagate."""
    path = work_dir / Path(record.segment_key).name
    manifest_bytes, _ = await archive.get_bytes(record.manifest_key)
    if manifest_bytes != record.manifest:
        return _failed(record, path, None, "the manifest in S3 is not the one recorded when the segment was archived")
    try:
        manifest = SegmentManifest.from_bytes(manifest_bytes)
    except ManifestInvalid as exc:
        return _failed(record, path, None, f"invalid manifest: {exc}")
    fetched = await archive.get_file(record.segment_key, path)
    if (fetched.sha256, fetched.size) != (manifest.segment_sha256, manifest.segment_size):
        return _failed(record, path, None, f"the segment file is {fetched.size} bytes with sha256 {fetched.sha256}; "
                                           f"its manifest states {manifest.segment_size} with {manifest.segment_sha256}")
    check = await check_segment_file(manifest, path)
    return _counted(FetchedSegment(record, path, check, check.problem))


def _failed(record: ColdSegmentRecord, path: Path, check: SegmentCheck | None, problem: str) -> FetchedSegment:
    return _counted(FetchedSegment(record, path, check, problem))


def _counted(segment: FetchedSegment) -> FetchedSegment:
    SEGMENTS_VERIFIED.labels(result="ok" if segment.ok else "broken").inc()
    return segment


def _manifest_of(segment: FetchedSegment) -> SegmentManifest:
    assert segment.check is not None
    return segment.check.manifest


async def fetch_verified_range(conn, archive: ObjectLockArchive, operator_id: str, from_seq: int, to_seq: int,
                               work_dir: Path) -> list[FetchedSegment]:
    """Every segment covering [from_seq, to_seq], downloaded and verified; `RestoreRefused` if the
    range is not entirely archived or any segment does not verify."""
    if not 1 <= from_seq <= to_seq:
        raise RestoreRefused(f"invalid range {from_seq}..{to_seq}")
    records = await cold_segment_store.segments(conn, operator_id, from_seq=from_seq, to_seq=to_seq)
    covered = bool(records) and records[0].first_seq <= from_seq and records[-1].last_seq >= to_seq and all(
        later.first_seq == earlier.last_seq + 1 for earlier, later in zip(records, records[1:]))
    if not covered:
        archived = await cold_segment_store.cold_head(conn, operator_id)
        raise RestoreRefused(f"{operator_id} chain_seq {from_seq}..{to_seq} is not all in the cold tier "
                             f"(archived: 1..{archived.chain_seq}; later entries are still in PostgreSQL)")
    fetched: list[FetchedSegment] = []
    for record in records:
        segment = await fetch_segment(archive, record, work_dir)
        if not segment.ok:
            raise RestoreRefused(f"{operator_id} segment {record.first_seq}..{record.last_seq}: {segment.problem}",
                                 first_bad_seq=segment.first_bad_seq)
        if fetched and _manifest_of(segment).prev_hash != _manifest_of(fetched[-1]).head_hash:
            raise RestoreRefused(f"{operator_id} segment {record.first_seq}..{record.last_seq} does not continue the "
                                 "segment before it", first_bad_seq=record.first_seq)
        fetched.append(segment)
    return fetched


def iter_range_lines(segments: list[FetchedSegment], from_seq: int, to_seq: int) -> Iterator[tuple[int, bytes]]:
    """(chain_seq, line) of the verified segments' entries within [from_seq, to_seq]."""
    for segment in segments:
        record = segment.record
        if record.last_seq < from_seq or record.first_seq > to_seq:
            continue
        for seq, line in enumerate(iter_segment_lines(segment.path), start=record.first_seq):
            if seq > to_seq:
                break
            if seq >= from_seq:
                yield seq, line


async def restore_to_file(conn, archive: ObjectLockArchive, operator_id: str, from_seq: int, to_seq: int,
                          out: Path, work_dir: Path) -> int:
    """Write the verified lines of [from_seq, to_seq] to `out`; returns how many."""
    segments = await fetch_verified_range(conn, archive, operator_id, from_seq, to_seq, work_dir)
    partial = out.with_name(f".{out.name}.part")
    count = 0
    try:
        with open(partial, "wb") as sink:
            for _, line in iter_range_lines(segments, from_seq, to_seq):
                sink.write(line)
                count += 1
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    ROWS_RESTORED.labels(target="file").inc(count)
    return count


async def restore_to_table(conn, archive: ObjectLockArchive, operator_id: str, from_seq: int, to_seq: int,
                           work_dir: Path) -> tuple[int, int]:
    """Copy the verified entries of [from_seq, to_seq] into `cdr_restored`; (entries, new rows)."""
    segments = await fetch_verified_range(conn, archive, operator_id, from_seq, to_seq, work_dir)
    count = new = 0
    batch: list[dict] = []
    for _, line in iter_range_lines(segments, from_seq, to_seq):
        batch.append(loads_strict(line))
        if len(batch) >= _RESTORE_BATCH:
            new += await cold_segment_store.restore_rows(conn, batch)
            count += len(batch)
            batch = []
    new += await cold_segment_store.restore_rows(conn, batch)
    count += len(batch)
    ROWS_RESTORED.labels(target="table").inc(new)
    return count, new


async def verify_operator_archive(conn, archive: ObjectLockArchive, operator_id: str,
                                  work_dir: Path) -> tuple[list[FetchedSegment], dict[str, Any]]:
    """Check every archived segment of an operator, their links, and the link into the hot chain.

    Returns the per-segment results and an operator summary (`ok`, and the first problem)."""
    records = await cold_segment_store.segments(conn, operator_id)
    results: list[FetchedSegment] = []
    problem: str | None = None
    first_bad_seq: int | None = None
    for record in records:
        segment = await fetch_segment(archive, record, work_dir)
        segment.path.unlink(missing_ok=True)  # checked; nothing is kept
        results.append(segment)
        if problem is not None:
            continue
        if not segment.ok:
            problem, first_bad_seq = f"segment {record.first_seq}..{record.last_seq}: {segment.problem}", \
                segment.first_bad_seq
        elif len(results) > 1 and results[-2].ok and _manifest_of(segment).prev_hash != _manifest_of(results[-2]).head_hash:
            problem, first_bad_seq = f"segment {record.first_seq}..{record.last_seq} does not continue the one " \
                                     "before it", record.first_seq
    if records and problem is None:
        hot = await cold_segment_store.first_hot_entry(conn, operator_id, records[-1].last_seq)
        if hot is not None and (hot[0] != records[-1].last_seq + 1 or hot[1] != records[-1].head_hash):
            problem, first_bad_seq = (f"the hot chain does not continue the last cold segment (first hot entry "
                                      f"{hot[0]} with prev_hash {hot[1]})"), records[-1].last_seq + 1
    summary: dict[str, Any] = {"operator_id": operator_id, "ok": problem is None, "segments": len(records),
                               "archived_through": records[-1].last_seq if records else 0}
    if problem is not None:
        summary["problem"] = problem
        summary["first_bad_seq"] = first_bad_seq
        log.error("archived chain does not verify", extra=summary)
    return results, summary
