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


class TapBatchEncoder:
    """Pure part of the writer: records in, record bytes out, plus the framing at the end."""

    def __init__(self, header: FileHeader, *, record_encoder: RecordEncoderName = "fast") -> None:
        self.header = header
        self.zone = groups.validate_header(header)
        self.clock = EventClock(self.zone)
        self.mapper = RecordMapper(header, self.clock)
        self.totals = self.mapper.totals
        self.encode_fields: Callable[[ScuFields], bytes]
        if record_encoder == "fast":
            self.encode_fields = ScuEncoder(header.codes).encode
        elif record_encoder == "reference":
            self.encode_fields = reference_record_encoder(header)
        else:
            raise ValueError(f"unknown record encoder {record_encoder!r}")

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
    ) -> None:
        self._encoder = TapBatchEncoder(header, record_encoder=record_encoder)  # header checked first
        self._path = Path(path)
        self._fsync = fsync
        # Anonymous: the kernel frees it even if this process is killed.
        self._spool: BinaryIO | None = tempfile.TemporaryFile(dir=spool_dir or self._path.parent)
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._events_size = 0
        self.summary: TapFileSummary | None = None

    def add(self, cdr: Cdr) -> None:
        self.add_all((cdr,))

    def add_all(self, cdrs: Iterable[Cdr]) -> None:
        if self._spool is None:
            raise ValueError("writer is already closed or aborted")
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
                prefix, suffix = self._encoder.framing(self._events_size)
                size = _write_atomically(self._path, self._fsync, prefix, spool, self._events_size, suffix)
            else:
                size = _write_atomically(self._path, self._fsync, self._encoder.notification(), None, 0, b"")
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
    path: Path, fsync: bool, prefix: bytes, spool: BinaryIO | None, spool_size: int, suffix: bytes
) -> int:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        try:
            _write_all(handle, prefix)
            if spool is not None:
                _copy_spool(spool, handle, spool_size)
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
    return len(prefix) + spool_size + len(suffix)


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
