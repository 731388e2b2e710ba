"""The later half of a large export file, built in a helper process (issue 6's speed target).

One process encodes about 27,000 records a second (reading rows, building records, the TAP
codec, the checkpoint's hashing all hold the GIL), so `build_day_export` gives a file whose
chain_seq range spans at least `CDR_EXPORT_SPLIT_MIN_RECORDS` to two processes: it writes the
records of the lower half of the range itself (1 … k) and starts a helper (a fresh interpreter:
`spawn`) for the upper half (k+1 … n). Splitting the range, not the count, costs no query
before the work starts; the helper counts k while both halves are read.

* **Same rows.** The exporter's transaction is REPEATABLE READ; its snapshot is exported
  (`pg_export_snapshot`) and the helper reads in a transaction set to that snapshot, so both
  see exactly the same stored rows.
* **Same bytes.** The helper counts records 1 … k and starts its TAP writer with the codes they
  hand out (`cdr_store.first_met` + `codecs/tap/parts.py`), and its checkpoint builder at entry k
  (`CheckpointBuilder(start=k)`: Merkle subtrees aligned in the whole file's tree). The file
  and checkpoint are then byte-identical to the one-pass build; `append_part`/`extend` check
  that the part continues where the first half ended, and a part that does not is not used:
  the file is built again in one pass (logged, `cdr_export_split_fallbacks_total`).
* **Failures.** An error in the helper is raised in the exporter as it would have been raised
  there (a record that cannot be encoded names its position in the whole file); a database or
  connection failure becomes `ConnectionError`, which the exporter's sink retries. A helper that
  dies without an answer is an `ExportPartError`. If the exporter's build is cancelled, the
  helper is terminated; its events file is removed in every case.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import os
import re
import resource
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
from prometheus_client import Counter

from cdr_mediation.codecs.errors import CodecValidationError
from cdr_mediation.codecs.header import FileHeader
from cdr_mediation.domain.checkpoint import CheckpointBuilder, CheckpointError, CheckpointPart
from cdr_mediation.infra.postgres.cdr_store import (
    EXPORT_COLUMNS, FileRowsQuery, first_met, iter_file_rows, record_from_export_row)

SPLIT_FALLBACKS = Counter("cdr_export_split_fallbacks_total",
                          "Large export files built again in one pass because the helper's part did not continue "
                          "the first half")
_CHUNK = 2_000  # rows handed to the writer thread per event-loop round trip
_SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+(-[0-9]+)?")
_PORTABLE = (CodecValidationError, CheckpointError)


class ExportPartError(RuntimeError):
    """The helper process failed in a way that is not the input's fault, or ended without an answer."""


@dataclasses.dataclass(frozen=True)
class SplitBuild:
    """May `build_day_export` use a helper process, and how it connects.
    `min_records` 0 means never."""

    dsn: str = dataclasses.field(repr=False)  # may hold a password
    min_records: int


@dataclasses.dataclass(frozen=True)
class PartJob:
    """What the helper is given (pickled into the spawned interpreter)."""

    dsn: str = dataclasses.field(repr=False)
    snapshot: str
    before: FileRowsQuery  # records 1 … k: only counted, and their first-met SMSCs and minutes read
    rows: FileRowsQuery  # records k+1 … n
    operator_id: str
    day: str
    header: FileHeader
    export_format: Any  # a format with `writes_parts` (codecs/adapters.py)
    events_path: str


@dataclasses.dataclass(frozen=True)
class PartResult:
    tap: Any  # codecs.tap.writer.TapPart
    checkpoint: CheckpointPart
    peak_rss_kib: int
    cpu_s: float


def records_for_thread(rows: AsyncIterator, builder: CheckpointBuilder, loop: asyncio.AbstractEventLoop):
    """A plain iterator for a writer thread: it pulls chunks of stored rows from the event
    loop (rows of `EXPORT_COLUMNS`), adds each to the checkpoint and yields its entry (a
    `CdrRecord`: what the export formats read, attribute by attribute, of a `Cdr`).

    The checkpoint reads the row's columns by name, as it would read the entry (a stored row is
    the entry plus ``record_hash``), and `record_from_export_row` builds the record from the row's
    values: no entry dict and no `Cdr` constructor per record (measured: most of the CPU that is
    not the codec's)."""
    async def next_chunk() -> list:
        chunk = []
        async for row in rows:
            chunk.append(row)
            if len(chunk) == _CHUNK:
                break
        return chunk

    while chunk := asyncio.run_coroutine_threadsafe(next_chunk(), loop).result():
        for row in chunk:
            builder.add(row, row["record_hash"])
            yield record_from_export_row(row)


# -- in the helper process --------------------------------------------------------------------


def run_part(job: PartJob, answer) -> None:
    """The helper's entry point: build the part, send `("ok", PartResult)` or `("error", exc)`."""
    try:
        result = asyncio.run(_build_part(job))
        answer.send(("ok", result))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the exporter
        Path(job.events_path).unlink(missing_ok=True)
        answer.send(("error", _portable(exc)))
    finally:
        answer.close()


async def _build_part(job: PartJob) -> PartResult:
    if not _SNAPSHOT_ID.fullmatch(job.snapshot):
        raise ExportPartError(f"not a snapshot id: {job.snapshot!r}")
    conn = await asyncpg.connect(job.dsn, timeout=10, command_timeout=600)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await conn.execute(f"SET TRANSACTION SNAPSHOT '{job.snapshot}'")
            index_base, smsc_ids, minutes = await first_met(conn, job.before)
            tables = job.export_format.tables_met(job.header, smsc_ids, minutes)
            builder = CheckpointBuilder(job.operator_id, job.day, start=index_base)
            rows = iter_file_rows(conn, job.rows, columns=EXPORT_COLUMNS)
            try:
                records = records_for_thread(rows, builder, asyncio.get_running_loop())
                tap = await asyncio.to_thread(job.export_format.write_part, job.events_path, job.header, records,
                                              tables=tables, index_base=index_base)
            finally:
                await rows.aclose()
    finally:
        await conn.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return PartResult(tap, builder.part(), _peak_rss_kib(), round(usage.ru_utime + usage.ru_stime, 3))


def _peak_rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def _portable(exc: BaseException) -> BaseException:
    """`exc` as an exception that unpickles in the exporter and keeps its meaning there."""
    if isinstance(exc, _PORTABLE) or isinstance(exc, ExportPartError):
        return exc
    if isinstance(exc, (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError)):
        return ConnectionError(f"export helper: {type(exc).__name__}: {exc}")
    return ExportPartError(f"export helper: {type(exc).__name__}: {exc}")


# -- in the exporter --------------------------------------------------------------------------


class PartHelper:
    """The helper process of one build: started with a job, awaited for its `PartResult`,
    always stopped (terminated if still running) and its events file removed."""

    def __init__(self, job: PartJob) -> None:
        self.job = job
        context = multiprocessing.get_context("spawn")
        self._answers, answer = context.Pipe(duplex=False)
        self._process = context.Process(target=run_part, args=(job, answer), name="export-part", daemon=True)
        self._process.start()
        answer.close()  # the helper holds the only sending end: its exit means EOF here

    async def result(self) -> PartResult:
        try:
            status, value = await asyncio.to_thread(self._answers.recv)
        except EOFError:
            await asyncio.to_thread(self._process.join, 5)
            raise ExportPartError(f"the export helper ended without an answer (exit code "
                                  f"{self._process.exitcode})") from None
        if status == "error":
            raise value
        return value

    def stop(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
        self._process.join(10)
        self._answers.close()
        Path(self.job.events_path).unlink(missing_ok=True)


def events_path(data_path: Path) -> Path:
    """Where the helper writes the events of a data file's later part (beside it, hidden)."""
    return data_path.with_name(f".{data_path.name}.part-{os.getpid()}")
