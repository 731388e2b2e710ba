"""Building a closed day's export file from PostgreSQL: the PENDING → BUILT step (issue 6).

For one `DayClosed` (operator, day, the chain head when the day closed, its `day_sequence`):

1. the operator's stored entries of that UTC day up to the closing head, in chain order, stream
   from PostgreSQL (`file_rows`) into the operator's export format (TAP 3.12 by default),
   which runs in a worker thread; the same pass feeds the `CheckpointBuilder` (counts, totals,
   streaming Merkle root), so a file of tens of millions of records is never held in memory;
2. the format's own count and amount totals must equal the checkpoint's (two independent tallies
   of one pass);
3. the data file and `checkpoint.json` (its RFC 8785 bytes) go into the deterministic ZIP, dated
   with the cut-off.

Entries of the day that arrived after the day closed (chain_seq above the closing head) are not
in this file: they are the day's corrections (rollup revisions ≥ 1) and go into the next file to
close, which carries them with the adjustments of closed days (`domain/file_scope.py`).
Everything here is a function of the stored rows, the configuration and the `DayClosed` record,
so building twice gives the same bytes (`cdrmed export rebuild` relies on it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from cdr_mediation.agents.export_part import (
    SPLIT_FALLBACKS, PartHelper, PartJob, SplitBuild, events_path, records_for_thread)
from cdr_mediation.codecs.adapters import export_format_for
from cdr_mediation.codecs.tap.writer import PartMismatch
from cdr_mediation.codecs.export_zip import ZipMember, write_export_zip
from cdr_mediation.domain.cdr import format_utc
from cdr_mediation.domain.checkpoint import Checkpoint, CheckpointBuilder, CheckpointError
from cdr_mediation.domain.day_close import DayClosed
from cdr_mediation.domain.export_config import ExportConfig, day_cut_off, file_header, file_name
from cdr_mediation.infra.file_digest import file_sha256  # noqa: F401 - callers import it from here
from cdr_mediation.domain.file_scope import FileScope
from cdr_mediation.infra.postgres.cdr_store import (
    COLUMNS, EXPORT_COLUMNS, file_rows_query, iter_file_rows, iter_scope_rows)
from cdr_mediation.infra.postgres.export_store import stored_file_scope

log = logging.getLogger(__name__)
CHECKPOINT_MEMBER = "checkpoint.json"


class ExportBuildError(RuntimeError):
    """The file and its checkpoint disagree: nothing is built."""


@dataclasses.dataclass(frozen=True)
class BuiltExport:
    file_name: str
    zip_path: Path
    zip_sha256: str
    data_member: str
    checkpoint: Checkpoint
    parts: int = 1  # processes that encoded the data file (2: agents/export_part.py)
    helper_peak_rss_kib: int = 0
    helper_cpu_s: float = 0.0


async def build_day_export(conn, config: ExportConfig, closed: DayClosed, out_dir: Path, *,
                           split: SplitBuild | None = None) -> BuiltExport:
    """Build the export file of `closed` into `out_dir`. With `split`, a file whose chain_seq
    range spans at least `split.min_records` is built by two processes (`agents/export_part.py`),
    with the same bytes."""
    operator = config.operator(closed.operator_id)
    header = file_header(config, closed)
    name = file_name(config, operator, closed.day_sequence)
    export_format = export_format_for(config.adapter_config(), closed.operator_id)
    data_path = out_dir / f"{name}{export_format.file_extension}"
    cut_off = day_cut_off(closed.day)
    written = helper = None
    if (split is not None and split.min_records > 0 and getattr(export_format, "writes_parts", False)
            and not conn.is_in_transaction()):
        # One snapshot for both processes: REPEATABLE READ, exported to the helper.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            written = await _write_in_two_parts(conn, split, export_format, closed, header, data_path)
    if written is not None:
        summary, builder, helper = written
    else:
        summary, builder = await _write_in_one_pass(conn, export_format, closed, header, data_path)

    totals = builder.totals()
    written_totals = (summary.record_count, summary.total_amount_minor, summary.total_tax_minor)
    counted = (builder.record_count, totals["amount_minor"], totals["tax_minor"])
    if written_totals != counted:
        raise ExportBuildError(f"{name}: the {export_format.name} writer counted {written_totals} (records, amount, "
                               f"tax), the checkpoint {counted}")
    zip_path = out_dir / f"{name}.zip"
    finished: list[Checkpoint] = []

    def checkpoint_bytes() -> bytes:  # in the ZIP's thread, once the data member is in
        finished.append(builder.finish(file_name=name, file_sequence=closed.day_sequence,
                                       cut_off=format_utc(cut_off), data_sha256=data_digest.result()))
        return finished[0].canonical_bytes()

    # The data file's SHA-256 is taken on one core while the ZIP deflates it on another (both
    # release the GIL); the checkpoint, which states it, is the ZIP's second member.
    digests = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="data-sha256")
    try:
        data_digest = digests.submit(file_sha256, data_path)
        members = [ZipMember(data_path.name, path=data_path), ZipMember(CHECKPOINT_MEMBER, later=checkpoint_bytes)]
        await asyncio.to_thread(write_export_zip, zip_path, members, cut_off)
    finally:
        digests.shutdown(wait=False)  # done when the ZIP is; after a failure, not waited for here
    checkpoint = finished[0]
    return BuiltExport(name, zip_path, await asyncio.to_thread(file_sha256, zip_path), data_path.name, checkpoint,
                       *((2, helper.peak_rss_kib, helper.cpu_s) if helper is not None else ()))


async def _write_in_one_pass(conn, export_format, closed: DayClosed, header, data_path: Path):
    builder = CheckpointBuilder(closed.operator_id, closed.day)
    rows = file_rows(conn, closed, columns=EXPORT_COLUMNS)
    try:
        records = records_for_thread(rows, builder, asyncio.get_running_loop())
        summary = await asyncio.to_thread(export_format.write, data_path, header, records)
    finally:
        await rows.aclose()  # a writer that stopped early leaves a page read in flight on `conn`
    return summary, builder


async def _write_in_two_parts(conn, split: SplitBuild, export_format, closed: DayClosed, header, data_path: Path):
    """The records of the lower half of the file's chain_seq range here (1 … k), the upper half
    in the helper; None when the range is too small to split or the helper's part does not
    continue this half (then the caller builds in one pass)."""
    started = time.monotonic()
    query = await file_rows_query(conn, await scope_of(conn, closed))
    if query is None:
        return None
    span = query.last_seq - query.first_seq + 1  # at least the file's records
    if span < max(split.min_records, 2):
        return None
    split_seq = query.first_seq + span // 2 - 1
    job = PartJob(split.dsn, await conn.fetchval("SELECT pg_export_snapshot()"), query.bounded(last_seq=split_seq),
                  query.bounded(first_seq=split_seq + 1), closed.operator_id, closed.day, header,
                  export_format, str(events_path(data_path)))
    writer = export_format.open_writer(data_path, header)  # the header is checked before the helper starts
    helper = PartHelper(job)
    split_s = time.monotonic() - started
    try:
        builder = CheckpointBuilder(closed.operator_id, closed.day)
        rows = iter_file_rows(conn, job.before, columns=EXPORT_COLUMNS)
        try:
            records = records_for_thread(rows, builder, asyncio.get_running_loop())
            await asyncio.to_thread(writer.add_all, records)
        finally:
            await rows.aclose()
        first_half_done = time.monotonic()
        part = await helper.result()
        waited_s = time.monotonic() - first_half_done  # > 0: the helper's half took longer
        try:
            writer.append_part(part.tap)
            builder.extend(part.checkpoint)
        except (PartMismatch, CheckpointError) as exc:
            SPLIT_FALLBACKS.inc()
            log.warning("the helper's half of a large export does not continue the first; building it in one pass",
                        extra={"operator_id": closed.operator_id, "day": closed.day, "reason": str(exc)})
            writer.abort()
            return None
        joined = time.monotonic()
        summary = await asyncio.to_thread(writer.close)
        close_s = time.monotonic() - joined
    except BaseException:
        writer.abort()
        raise
    finally:
        helper.stop()
    log.info("export data file built by two processes", extra={
        "operator_id": closed.operator_id, "day": closed.day, "records": summary.record_count,
        "split_after": part.tap.index_base,
        "helper_peak_rss_mb": round(part.peak_rss_kib / 1024, 1), "helper_cpu_s": part.cpu_s,
        "split_s": round(split_s, 3), "first_half_s": round(first_half_done - started - split_s, 3),
        "waited_for_helper_s": round(waited_s, 3), "close_s": round(close_s, 3)})
    return summary, builder, part


async def scope_of(conn, closed: DayClosed) -> FileScope:
    """Which entries the file of `closed` holds (`domain/file_scope.py`), from the operator's
    earlier files. ExportBuildError when an earlier file is unknown."""
    try:
        return await stored_file_scope(conn, closed)
    except ValueError as exc:
        raise ExportBuildError(str(exc)) from None


async def file_rows(conn, closed: DayClosed, *, columns: Sequence[str] = COLUMNS) -> AsyncIterator:
    """The stored rows (`cdr_store.COLUMNS`, or the build's `EXPORT_COLUMNS`) of the file a
    `DayClosed` names, in chain order: the one definition of a file's content, shared by the
    build, the rebuild and the verifier. Besides its day's entries a file carries the late entries
    and adjustments of days closed before it (`domain/file_scope.py`)."""
    scope = await scope_of(conn, closed)
    async for row in iter_scope_rows(conn, scope, columns=columns):
        yield row
