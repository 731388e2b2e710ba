"""The cold-tier job (`cdrmed archive cold`, one pass; a CronJob runs it daily).

For each operator, while its chain has a segment eligible for the cold tier
(`domain/cold_segment.plan_segment`):

1. read the segment's rows from PostgreSQL in chain order, verifying the chain page by page from
   the previous segment's head (a broken chain is never archived: it is reported, with the first
   bad chain_seq, and left where it is);
2. write the segment file (gzip JSON lines) and its manifest, then check the file as written with
   the restore's own check (`verify_segment_lines`), so what goes to S3 is known to restore;
3. archive both under COMPLIANCE object lock, retained from the cut-off of the segment's newest
   day (`domain/retention.py`); `ObjectLockArchive` reads each back and verifies it;
4. in one PostgreSQL transaction, record the segment and release its rows from `cdr`
   (`release_cold_segment`, migration 0004, checks they are exactly the manifest's rows).

Nothing is released unless steps 1–3 succeeded. When S3 is down (`ArchiveUnavailable`) the pass
stops, nothing is deleted, the hot window simply extends until a later pass succeeds (DESIGN.md
§7), `cdr_archive_failures_total{kind="unavailable"}` counts it and the command exits non-zero.
Any step can be repeated after a crash: the same rows give the same files, which S3 then reports
as already archived.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import asyncpg
from prometheus_client import Counter, Gauge, Histogram

from cdr_mediation.codecs.cold_segment import SegmentFileWriter, iter_segment_lines
from cdr_mediation.domain.chain import ChainBreak, ChainHead, verify_chain
from cdr_mediation.domain.cold_segment import (
    SegmentCheck,
    SegmentContent,
    SegmentManifest,
    SegmentRange,
    plan_segment,
    verify_segment_lines,
)
from cdr_mediation.domain.export_config import day_cut_off
from cdr_mediation.domain.retention import hot_window_start, retain_until
from cdr_mediation.infra.archive import ArchiveError, ArchiveUnavailable, ObjectLockArchive
from cdr_mediation.infra.archive.metrics import ARCHIVE_FAILURES, failure_kind
from cdr_mediation.infra.postgres import cold_segment_store
from cdr_mediation.infra.postgres.cdr_store import iter_chain_pages, operators

log = logging.getLogger("cdr_mediation.cold_tier")

SEGMENTS = Counter("cdr_cold_segments_archived_total",
                   "Cold segments archived, verified and released, by what S3 reported for the file", ["outcome"])
ROWS_RELEASED = Counter("cdr_cold_rows_released_total",
                        "CDR rows removed from PostgreSQL after their segment was archived and verified")
SEGMENT_SECONDS = Histogram("cdr_cold_segment_seconds", "Time to build, archive, verify and release one segment",
                            buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600))
LAST_SUCCESS = Gauge("cdr_cold_pass_last_success_timestamp_seconds",
                     "When a cold-tier pass last finished without a failure (Unix seconds)")


class SegmentRefused(Exception):
    """The rows of a planned segment cannot be archived as they are (a person must look).

    `seq` is the first chain_seq concerned, when there is one."""

    def __init__(self, message: str, *, seq: int | None = None) -> None:
        super().__init__(message)
        self.seq = seq


def chain_break_message(fault: ChainBreak) -> str:
    return f"chain breaks at chain_seq {fault.seq}: {fault.kind.value} (expected {fault.expected}, found {fault.found})"


@dataclasses.dataclass
class ColdPassReport:
    window_start: dt.datetime
    planned: list[SegmentRange] = dataclasses.field(default_factory=list)
    archived: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    failures: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> dict[str, Any]:
        return {"window_start": self.window_start.isoformat(), "ok": self.ok,
                "segments_planned": len(self.planned), "segments_archived": len(self.archived),
                "rows_released": sum(a["rows_released"] for a in self.archived), "failures": len(self.failures)}


@dataclasses.dataclass(frozen=True)
class ColdTierPolicy:
    hot_window_months: int
    retention_days: int
    max_rows: int

    @classmethod
    def from_settings(cls, settings) -> "ColdTierPolicy":
        return cls(settings.hot_window_months, settings.archive_retention_days, settings.cold_segment_max_rows)


async def run_cold_pass(conn, archive: ObjectLockArchive, policy: ColdTierPolicy, *, now: dt.datetime,
                        work_dir: Path, operator_ids: list[str] | None = None,
                        dry_run: bool = False) -> ColdPassReport:
    """One pass over every operator (or those given); see the module docstring."""
    report = ColdPassReport(hot_window_start(now, policy.hot_window_months))
    work_dir.mkdir(parents=True, exist_ok=True)
    for operator_id in operator_ids or await operators(conn):
        stop = await _operator_pass(conn, archive, policy, operator_id, report, work_dir, dry_run)
        if stop:
            break
    if report.ok and not dry_run:
        LAST_SUCCESS.set(time.time())
    log.info("cold-tier pass finished", extra=report.summary())
    return report


async def _operator_pass(conn, archive: ObjectLockArchive, policy: ColdTierPolicy, operator_id: str,
                         report: ColdPassReport, work_dir: Path, dry_run: bool) -> bool:
    """Archive the operator's eligible segments in order; True if the whole pass must stop."""
    start = await cold_segment_store.cold_head(conn, operator_id)
    while True:
        head_seq, first_recent = await cold_segment_store.plan_inputs(
            conn, operator_id, next_seq=start.chain_seq + 1, window_start=report.window_start,
            max_rows=policy.max_rows)
        plan = plan_segment(operator_id, next_seq=start.chain_seq + 1, head_seq=head_seq,
                            first_recent_seq=first_recent, max_rows=policy.max_rows)
        if plan is None:
            return False
        report.planned.append(plan)
        if dry_run:
            log.info("cold segment eligible (dry run)", extra=plan.to_dict())
            start = ChainHead(operator_id, plan.last_seq, "")  # the hash is not needed to plan the next
            continue
        started = time.monotonic()
        try:
            archived = await archive_segment(conn, archive, policy, plan, start, work_dir)
        except (ArchiveError, SegmentRefused, asyncpg.PostgresError) as exc:
            kind = _failure_kind(exc)
            ARCHIVE_FAILURES.labels(kind=kind).inc()
            failure = {**plan.to_dict(), "kind": kind, "error": str(exc)}
            if isinstance(exc, SegmentRefused) and exc.seq is not None:
                failure["first_bad_seq"] = exc.seq
            report.failures.append(failure)
            log.error("cold segment not archived; its rows stay in PostgreSQL", extra=failure)
            # S3 down: the other operators would fail the same way; the next pass retries.
            return isinstance(exc, ArchiveUnavailable)
        SEGMENT_SECONDS.observe(time.monotonic() - started)
        SEGMENTS.labels(outcome=archived["outcome"]).inc()
        ROWS_RELEASED.inc(archived["rows_released"])
        report.archived.append(archived)
        log.info("cold segment archived and released", extra=archived)
        start = ChainHead(operator_id, plan.last_seq, archived["head_hash"])


def _failure_kind(exc: BaseException) -> str:
    if isinstance(exc, SegmentRefused):
        return "chain_break"
    if isinstance(exc, asyncpg.PostgresError):
        return "database"
    return failure_kind(exc)


async def archive_segment(conn, archive: ObjectLockArchive, policy: ColdTierPolicy, plan: SegmentRange,
                          start: ChainHead, work_dir: Path) -> dict[str, Any]:
    """Build, archive, verify and release one segment; the evidence recorded, as a dict."""
    with tempfile.TemporaryDirectory(dir=work_dir, prefix=f"{plan.operator_id}-") as scratch:
        path = Path(scratch) / Path(plan.segment_key).name
        manifest = await build_segment_file(conn, plan, start, path)
        manifest_bytes = manifest.to_bytes()
        until = retain_until(day_cut_off(manifest.done_at_max[:10]), policy.retention_days)
        segment_object = await archive.put_file(plan.segment_key, path, retain_until=until)
        manifest_object = await archive.put_bytes(plan.manifest_key, manifest_bytes, retain_until=until)
    released = await cold_segment_store.record_and_release(conn, manifest, manifest_bytes, segment=segment_object,
                                                           manifest_object=manifest_object)
    return {**plan.to_dict(), "rows_released": released, "head_hash": manifest.head_hash,
            "segment_sha256": manifest.segment_sha256, "segment_size": manifest.segment_size,
            "segment_version_id": segment_object.version_id, "outcome": segment_object.outcome.value,
            "retain_until": until.isoformat(), "done_at_min": manifest.done_at_min,
            "done_at_max": manifest.done_at_max}


async def build_segment_file(conn, plan: SegmentRange, start: ChainHead, path: Path) -> SegmentManifest:
    """Write the segment's rows to `path` and return its manifest; `SegmentRefused` if the stored
    rows are not an intact chain continuing `start`, or the written file does not check out."""
    content = SegmentContent(plan)
    head = start
    with SegmentFileWriter(path) as writer:
        async for page in iter_chain_pages(conn, plan.operator_id, from_seq=plan.first_seq, through_seq=plan.last_seq):
            result = verify_chain(plan.operator_id, page, start=head)
            if not result.ok:
                raise SegmentRefused(chain_break_message(result.first_break), seq=result.first_break.seq)
            head = result.head
            for row in page:
                writer.write(content.add(row))
        digest = writer.close()
    if head.chain_seq != plan.last_seq:
        raise SegmentRefused(f"rows end at chain_seq {head.chain_seq}, the segment at {plan.last_seq}",
                             seq=head.chain_seq + 1)
    manifest = content.manifest(prev_hash=start.head_hash, head_hash=head.head_hash, file=digest)
    check = await check_segment_file(manifest, path)
    if not check.ok:
        raise SegmentRefused(f"the segment file as written does not verify: {check.problem}", seq=check.first_bad_seq)
    return manifest


async def check_segment_file(manifest: SegmentManifest, path: Path) -> SegmentCheck:
    """`verify_segment_lines` over a segment file on disk (in a thread: it is CPU-bound).

    A file gzip cannot read (corrupt, truncated) fails the check like a broken chain does."""

    def check() -> SegmentCheck:
        try:
            return verify_segment_lines(manifest, iter_segment_lines(path))
        except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            return SegmentCheck(manifest, 0, None, f"the file cannot be read as gzip: {type(exc).__name__}: {exc}")

    return await asyncio.to_thread(check)
