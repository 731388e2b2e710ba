"""Writing a TAP 3.12 file: canonical bytes, streamed with memory that does not grow.

Canonical bytes. The same header and records always give the same bytes:
* definite lengths in their shortest form everywhere (DER's rule, and what asn1tools emits);
* members in the order of the ASN.1 definitions, optional members present or absent by fixed
  rules (docs/codecs.md), never by accident of input;
* records in chain order (strictly increasing `chain_seq`: the writer refuses anything else,
  and `encode_tap_file` sorts first, so re-ordered input gives identical bytes);
* codes for UTC offsets and SMSCs handed out in first-met order over that record order.

Streaming. BER puts a length in front of every constructed value, and TransferBatch's
length covers the whole file. Two choices were possible: patch fixed-width lengths
afterwards (valid BER, but not the shortest form, so not canonical and not what asn1tools
re-encodes), or know the sizes before writing the front. The writer takes the second way with
a single pass over the records: each record is validated, encoded and appended to an
anonymous spool file while the totals, the SMSC list and the UTC offset list accumulate.
When the records end, everything in front of the call events is known (NetworkInfo depends on
the SMSCs and offsets met, the lengths on the spool size), so the final file is written as
prefix + spool (copied by the kernel) + AuditControlInfo. Memory holds one write buffer and a
few small tables, whatever the record count; the disk briefly holds the events twice.

All or nothing. The output appears under its name only when it is complete (written to a
hidden temporary name in the same directory, fsynced, then renamed). A validation error in
record 7 of 10 million leaves no file behind, only the exception.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal

from cdr_mediation.domain.cdr import Cdr

from .. import asn1
from ..ber import length, tag
from ..constraints import checker
from ..header import FileHeader
from . import header_groups as groups
from .fast import ScuEncoder
from .record import RecordMapper, ScuFields, scu_value
from .timestamps import EventClock

T_TRANSFER_BATCH = tag(1, constructed=True)
T_CALL_EVENT_DETAILS = tag(3, constructed=True)
RecordEncoderName = Literal["fast", "reference"]
_FLUSH_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True, slots=True)
class TapFileSummary:
    """What was written; the exporter records it next to the file."""

    kind: Literal["transferBatch", "notification"]
    record_count: int
    total_charge: int  # TAP units (AbsoluteAmount scaled by tapDecimalPlaces)
    total_tax: int
    first_chain_seq: int | None
    last_chain_seq: int | None
    size: int  # octets


def reference_record_encoder(header: FileHeader) -> Callable[[ScuFields], bytes]:
    """asn1tools' generic encoder on the shipped module: the reference for the fast one."""
    call_event = asn1.spec().modules[asn1.TAP_MODULE]["CallEventDetail"]
    return lambda fields: call_event.encode(scu_value(fields, header))


class PartMismatch(ValueError):
    """A part of a file encoded elsewhere does not continue the records before it."""


@dataclasses.dataclass(frozen=True, slots=True)
class TapPart:
    """The call events of a later part of a file, encoded by `parts.TapPartWriter` into
    `events_path`, with what `TapFileWriter.append_part` needs to continue from them."""

    events_path: str
    events_size: int
    index_base: int  # records of the file before the part
    start_tables: CodeTables  # the codes the part started with
    end_tables: CodeTables  # … and ended with
    count: int
    total_charge: int
    total_tax: int
    earliest: str | None
    latest: str | None
    first_chain_seq: int | None
    last_chain_seq: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class CodeTables:
    """The codes a writer has handed out so far, in code order: recording entities (SMSC ids)
    and UTC offsets. Both become NetworkInfo; each record refers to them by code."""

    rec_entities: tuple[str, ...] = ()
    offsets: tuple[str, ...] = ()


class TapBatchEncoder:
    """Pure part of the writer: records in, record bytes out, plus the framing at the end.

    `tables` starts the codes where the records before these left them (a later part of a
    file, `parts.py`); `index_base` is the number of those records (for error positions)."""

    def __init__(self, header: FileHeader, *, record_encoder: RecordEncoderName = "fast",
                 tables: CodeTables | None = None, index_base: int = 0) -> None:
        self.header = header
        self.zone = groups.validate_header(header)
        self.clock = EventClock(self.zone)
        self.mapper = RecordMapper(header, self.clock, index_base=index_base)
        if tables is not None:
            self.continue_with(tables)
        self.totals = self.mapper.totals
        self.encode_fields: Callable[[ScuFields], bytes]
        if record_encoder == "fast":
            self.encode_fields = ScuEncoder(header.codes).encode
        elif record_encoder == "reference":
            self.encode_fields = reference_record_encoder(header)
        else:
            raise ValueError(f"unknown record encoder {record_encoder!r}")

    def tables(self) -> CodeTables:
        return CodeTables(tuple(self.mapper.rec_entities), tuple(self.clock.offsets))

    def continue_with(self, tables: CodeTables) -> None:
        """Hand out codes from where `tables` stands: it must extend the codes handed out so far."""
        current = self.tables()
        if (tables.rec_entities[:len(current.rec_entities)] != current.rec_entities
                or tables.offsets[:len(current.offsets)] != current.offsets):
            raise PartMismatch(f"codes {tables} do not extend {current}")
        for smsc_id in tables.rec_entities[len(current.rec_entities):]:
            self.mapper.meet_smsc(smsc_id)
        self.clock.add_offsets(tables.offsets[len(current.offsets):])

    def encode_records(self, cdrs: Iterable[Cdr]) -> Iterator[bytes]:
        """Validate and encode the next records, one at a time (raises `CodecValidationError`)."""
        encode = self.encode_fields
        for fields in self.mapper.map_all(cdrs):
            yield encode(fields)

    def framing(self, events_size: int) -> tuple[bytes, bytes]:
        """(prefix, suffix) of a TransferBatch around `events_size` octets of call events."""
        header, totals = self.header, self.totals
        if totals.count == 0:
            raise ValueError("a file without call events is a Notification, not a TransferBatch")
        network = groups.network_info(header, self.clock.offsets, self.mapper.rec_entities)
        audit = groups.audit_control_info(totals, self.zone)
        checker().check("NetworkInfo", network, path="networkInfo", scope="file")
        checker().check("AuditControlInfo", audit, path="auditControlInfo", scope="file")
        front = (
            groups.encode("BatchControlInfo", groups.batch_control_info(header, self.zone))
            + groups.encode("AccountingInfo", groups.accounting_info(header))
            + groups.encode("NetworkInfo", network)
            + groups.encode("MessageDescriptionInfoList", groups.message_description_info(header))
            + T_CALL_EVENT_DETAILS
            + length(events_size)
        )
        suffix = groups.encode("AuditControlInfo", audit)
        prefix = T_TRANSFER_BATCH + length(len(front) + events_size + len(suffix)) + front
        return prefix, suffix

    def notification(self) -> bytes:
        return groups.encode("DataInterChange", ("notification", groups.notification(self.header, self.zone)))

    def summary(self, size: int) -> TapFileSummary:
        totals = self.totals
        return TapFileSummary(
            "transferBatch" if totals.count else "notification",
            totals.count,
            totals.total_charge,
            totals.total_tax,
            totals.first_chain_seq,
            totals.last_chain_seq,
            size,
        )


class TapFileWriter:
    """Streams one TAP file to `path`. Use as a context manager, or call `close()`/`abort()`.

        with TapFileWriter(path, header) as writer:
            for batch in batches:          # in chain order
                writer.add_all(batch)
        summary = writer.summary

    Leaving the block with an exception removes every temporary file and creates no output.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        header: FileHeader,
        *,
        record_encoder: RecordEncoderName = "fast",
        spool_dir: str | os.PathLike[str] | None = None,
        fsync: bool = True,
        tables: CodeTables | None = None,
        index_base: int = 0,
    ) -> None:
        # header checked first
        self._encoder = TapBatchEncoder(header, record_encoder=record_encoder, tables=tables, index_base=index_base)
        self._path = Path(path)
        self._fsync = fsync
        self._spool: BinaryIO | None = self._open_spool(spool_dir)
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._events_size = 0
        self._tail: list[tuple[Path, int]] = []  # events of later parts (`append_part`), in order
        self.summary: TapFileSummary | None = None

    def _open_spool(self, spool_dir: str | os.PathLike[str] | None) -> BinaryIO:
        # Anonymous: the kernel frees it even if this process is killed.
        return tempfile.TemporaryFile(dir=spool_dir or self._path.parent)

    def add(self, cdr: Cdr) -> None:
        self.add_all((cdr,))

    def add_all(self, cdrs: Iterable[Cdr]) -> None:
        if self._spool is None:
            raise ValueError("writer is already closed or aborted")
        if self._tail:
            raise ValueError("records after an appended part would be out of chain order")
        append = self._pending.append
        size = self._pending_size
        encode = self._encoder.encode_fields
        try:
            for fields in self._encoder.mapper.map_all(cdrs):
                record = encode(fields)
                append(record)
                size += len(record)
                if size >= _FLUSH_BYTES:
                    self._write_pending(size)
                    size = 0
        finally:
            self._pending_size = size

    def _write_pending(self, size: int) -> None:
        assert self._spool is not None
        self._spool.write(b"".join(self._pending))
        self._pending.clear()
        self._events_size += size
        self._pending_size = 0

    def append_part(self, part: "TapPart") -> None:
        """Take the records of the file's next part, encoded by a `parts.TapPartWriter` (in
        another process) that started with the codes this writer has handed out: after its
        records, this writer is where the one-pass writer would be. Raises `PartMismatch`
        (and takes nothing) when the part did not start where this writer stands."""
        if self._spool is None:
            raise ValueError("writer is already closed or aborted")
        encoder = self._encoder
        if part.start_tables != encoder.tables():
            raise PartMismatch(f"the part started with codes {part.start_tables}, the records before it "
                               f"left {encoder.tables()}")
        if part.index_base != encoder.totals.count:
            raise PartMismatch(f"the part starts at record {part.index_base + 1}, "
                               f"after {encoder.totals.count} records")
        if not part.count:
            return
        last = encoder.totals.last_chain_seq
        if last is not None and part.first_chain_seq <= last:
            raise PartMismatch(f"the part starts at chain_seq {part.first_chain_seq}, after {last}")
        encoder.continue_with(part.end_tables)  # raises before anything changed (the end extends the start)
        totals = encoder.totals
        totals.count += part.count
        totals.total_charge += part.total_charge
        totals.total_tax += part.total_tax
        totals.earliest = part.earliest if totals.earliest is None else min(totals.earliest, part.earliest)
        totals.latest = part.latest if totals.latest is None else max(totals.latest, part.latest)
        if totals.first_chain_seq is None:
            totals.first_chain_seq = part.first_chain_seq
        totals.last_chain_seq = part.last_chain_seq
        self._tail.append((Path(part.events_path), part.events_size))

    def close(self) -> TapFileSummary:
        """Finish the file and move it into place; returns what was written."""
        if self.summary is not None:
            return self.summary
        spool = self._spool
        if spool is None:
            raise ValueError("writer was aborted")
        try:
            if self._pending:
                self._write_pending(self._pending_size)
            spool.flush()
            if self._encoder.totals.count:
                tail_size = sum(size for _, size in self._tail)
                prefix, suffix = self._encoder.framing(self._events_size + tail_size)
                size = _write_atomically(self._path, self._fsync, prefix, [(spool, self._events_size), *self._tail],
                                         suffix)
            else:
                size = _write_atomically(self._path, self._fsync, self._encoder.notification(), [], b"")
        except BaseException:
            self.abort()
            raise
        self._release_spool()
        self.summary = self._encoder.summary(size)
        return self.summary

    def abort(self) -> None:
        """Drop everything written so far; the output path is left untouched."""
        self._pending.clear()
        self._release_spool()

    def _release_spool(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def __enter__(self) -> "TapFileWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _write_atomically(
    path: Path, fsync: bool, prefix: bytes, events: list[tuple[BinaryIO | Path, int]], suffix: bytes
) -> int:
    """prefix + each (spool or file of events, its size) in order + suffix, at `path`."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        try:
            _write_all(handle, prefix)
            for source, size in events:
                if isinstance(source, Path):
                    with open(source, "rb") as part:
                        if os.fstat(part.fileno()).st_size != size:
                            raise ValueError(f"{source} does not hold the {size} octets of its part")
                        _copy_spool(part, handle, size)
                else:
                    _copy_spool(source, handle, size)
            _write_all(handle, suffix)
            if fsync:
                os.fsync(handle)
        finally:
            os.close(handle)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    return len(prefix) + sum(size for _, size in events) + len(suffix)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _copy_spool(spool: BinaryIO, fd: int, size: int) -> None:
    """Append the spool's `size` octets at fd's position: in the kernel when possible."""
    spool.seek(0)
    copied = 0
    try:
        while copied < size:
            step = os.copy_file_range(spool.fileno(), fd, size - copied)
            if step == 0:
                raise OSError("copy_file_range copied nothing")
            copied += step
    except (AttributeError, OSError):
        if copied:
            raise
        # No copy_file_range on this platform or between these files: copy in user space.
        spool.seek(0)
        while chunk := spool.read(16 << 20):
            _write_all(fd, chunk)


def write_tap_file(
    path: str | os.PathLike[str],
    header: FileHeader,
    records: Iterable[Cdr],
    *,
    record_encoder: RecordEncoderName = "fast",
    fsync: bool = True,
) -> TapFileSummary:
    """Stream `records` (already in chain order) into the TAP file at `path`."""
    with TapFileWriter(path, header, record_encoder=record_encoder, fsync=fsync) as writer:
        writer.add_all(records)
    assert writer.summary is not None
    return writer.summary


def encode_tap_file(header: FileHeader, records: Iterable[Cdr], *, record_encoder: RecordEncoderName = "fast") -> bytes:
    """The whole file in memory (tests, small files). Records are put in chain order first,
    so any order of the same records gives the same bytes."""
    ordered = list(records)
    try:
        ordered.sort(key=lambda cdr: cdr.chain_seq)
    except TypeError:
        pass  # a non-integer chain_seq: the mapper reports it with the record's position
    encoder = TapBatchEncoder(header, record_encoder=record_encoder)
    events = b"".join(encoder.encode_records(ordered))
    if not ordered:
        return encoder.notification()
    prefix, suffix = encoder.framing(len(events))
    return prefix + events + suffix
