"""Export formats behind one interface, chosen per operator by configuration.

The exporter never names a codec. It asks the registry for the operator's format and calls

    summary = export_format_for(config, operator_id).write(path, header, records)

with the file's `FileHeader` and the records in chain order. Every format writes the whole
file or nothing (a temporary name, then a rename), produces the same bytes for the same
input, and reports an `ExportSummary`.

Registered formats:

* ``ATRA_TAP_312_V1`` (default): GSMA TAP 3.12, one ServiceCentreUsage per CDR
  (`codecs.tap`). Options: ``codes`` (overrides of `TapCodes`), ``fsync``.
* ``ATRA_CSV_V1``: RFC 4180 CSV, one row per CDR. Options: ``columns`` (CDR fields, in
  order; default all), ``delimiter`` (default ``,``), ``header_row`` (default true).
* ``ATRA_JSONL_V1``: JSON lines, one object per CDR with sorted keys. Options: ``fields``
  (default all), ``header_line`` and ``trailer_line`` (default true) for a first line
  identifying the file and a last line with the count and totals.

Configuration (per operator, e.g. from the operator registry):

    {"default_format": "ATRA_TAP_312_V1",
     "operators": {"op-b": {"format": "ATRA_CSV_V1", "options": {"delimiter": ";"}}}}
"""

from __future__ import annotations

import csv
import enum
import dataclasses
import io
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import orjson

from cdr_mediation.domain.cdr import Cdr, format_utc

from .errors import CodecValidationError
from .header import FileHeader, TapCodes
from .tap.record import AmountScale
from .tap.parts import TapPartWriter, code_tables_met
from .tap.writer import CodeTables, TapFileSummary, TapFileWriter, TapPart, write_tap_file

DEFAULT_FORMAT = "ATRA_TAP_312_V1"
CDR_FIELDS: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(Cdr))


@dataclasses.dataclass(frozen=True, slots=True)
class ExportSummary:
    format: str
    record_count: int
    size: int  # octets
    first_chain_seq: int | None
    last_chain_seq: int | None
    total_amount_minor: int  # sums of the records' amount_minor / tax_minor
    total_tax_minor: int


class ExportFormat(Protocol):
    """What the exporter calls. Implementations are immutable and safe to reuse."""

    name: str
    file_extension: str

    def write(self, path: str | os.PathLike[str], header: FileHeader, records: Iterable[Cdr]) -> ExportSummary:
        """Write `records` (chain order) as the complete file at `path`; raise on invalid input.
        A record is a `Cdr` or anything with its attributes (the exporter passes `CdrRecord`s)."""
        ...




FormatFactory = Callable[[Mapping[str, Any]], ExportFormat]
_FACTORIES: dict[str, FormatFactory] = {}


def register(name: str) -> Callable[[FormatFactory], FormatFactory]:
    """Register a format factory under `name` (factories take the options mapping)."""

    def decorator(factory: FormatFactory) -> FormatFactory:
        if name in _FACTORIES:
            raise ValueError(f"export format {name!r} is already registered")
        _FACTORIES[name] = factory
        return factory

    return decorator


def registered_formats() -> tuple[str, ...]:
    return tuple(sorted(_FACTORIES))


def export_format(name: str, options: Mapping[str, Any] | None = None) -> ExportFormat:
    """The format called `name`, configured with `options`."""
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ValueError(f"unknown export format {name!r}; known: {', '.join(registered_formats())}")
    return factory(dict(options or {}))


def export_format_for(config: Mapping[str, Any], operator_id: str) -> ExportFormat:
    """The format configured for `operator_id`, else the configured or built-in default."""
    operators = config.get("operators", {})
    entry = operators.get(operator_id)
    if entry is None:
        return export_format(config.get("default_format", DEFAULT_FORMAT), config.get("default_options"))
    return export_format(entry.get("format", config.get("default_format", DEFAULT_FORMAT)), entry.get("options"))


def _reject_unknown(name: str, options: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {', '.join(unknown)}")


# -- TAP 3.12 ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class TapExportFormat:
    name: str
    codes: TapCodes | None  # None: the header's codes
    fsync: bool = True
    file_extension: str = ".tap"

    # A file can be written in two parts at once (`codecs/tap/parts.py`): `open_writer` for the
    # records 1 … k, `write_part` (another process) for the rest, `tables_met` for where the
    # second part starts.
    writes_parts = True

    def write(self, path: str | os.PathLike[str], header: FileHeader, records: Iterable[Cdr]) -> ExportSummary:
        header = self._header(header)
        return self._summary(header, write_tap_file(path, header, records, fsync=self.fsync))

    def open_writer(self, path: str | os.PathLike[str], header: FileHeader) -> "TapFileExport":
        header = self._header(header)
        return TapFileExport(TapFileWriter(path, header, fsync=self.fsync), lambda s: self._summary(header, s))

    def tables_met(self, header: FileHeader, smsc_ids: Iterable[str], minutes: Iterable[str]) -> CodeTables:
        return code_tables_met(self._header(header), smsc_ids, minutes)

    def write_part(self, events_path: str | os.PathLike[str], header: FileHeader, records: Iterable[Cdr], *,
                   tables: CodeTables, index_base: int) -> TapPart:
        with TapPartWriter(events_path, self._header(header), tables=tables, index_base=index_base) as writer:
            writer.add_all(records)
        assert writer.part is not None
        return writer.part

    def _header(self, header: FileHeader) -> FileHeader:
        return header if self.codes is None else dataclasses.replace(header, codes=self.codes)

    def _summary(self, header: FileHeader, summary: TapFileSummary) -> ExportSummary:
        scale = AmountScale(header.currency_exponent, header.tap_decimal_places)
        return ExportSummary(
            self.name,
            summary.record_count,
            summary.size,
            summary.first_chain_seq,
            summary.last_chain_seq,
            scale.to_minor(summary.total_charge),
            scale.to_minor(summary.total_tax),
        )


@dataclasses.dataclass(frozen=True)
class TapFileExport:
    """An open TAP file: records, then the parts written elsewhere, then `close`."""

    writer: TapFileWriter
    summarise: Callable[[TapFileSummary], ExportSummary]

    def add_all(self, records: Iterable[Cdr]) -> None:
        self.writer.add_all(records)

    def append_part(self, part: TapPart) -> None:
        self.writer.append_part(part)

    def close(self) -> ExportSummary:
        return self.summarise(self.writer.close())

    def abort(self) -> None:
        self.writer.abort()


@register("ATRA_TAP_312_V1")
def _tap_312(options: Mapping[str, Any]) -> ExportFormat:
    _reject_unknown("ATRA_TAP_312_V1", options, {"codes", "fsync"})
    codes = TapCodes.from_config(options["codes"]) if "codes" in options else None
    return TapExportFormat("ATRA_TAP_312_V1", codes, bool(options.get("fsync", True)))


# -- text formats ------------------------------------------------------------------------


class _RecordChecks:
    """The rules every format applies: the file's operator and currency, chain order."""

    def __init__(self, header: FileHeader, scope: str) -> None:
        self._header = header
        self._scope = scope
        self.count = 0
        self.first: int | None = None
        self.last: int | None = None
        self.amount = 0
        self.tax = 0

    def accept(self, cdr: Cdr) -> None:
        index = self.count + 1
        cdr_id = cdr.cdr_id if isinstance(cdr.cdr_id, str) else repr(cdr.cdr_id)

        def fail(field: str, reason: str) -> CodecValidationError:
            return CodecValidationError(field, reason, record_index=index, cdr_id=cdr_id)

        if cdr.operator_id != self._header.operator_id:
            raise fail("operator_id", f"{cdr.operator_id!r} is not this file's operator {self._header.operator_id!r}")
        if cdr.currency != self._header.currency:
            raise fail("currency", f"{cdr.currency!r} is not the file's currency {self._header.currency!r}")
        seq = cdr.chain_seq
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise fail("chain_seq", f"{seq!r} must be an integer >= 1")
        if self.last is not None and seq <= self.last:
            raise fail(
                "chain_seq", f"{seq} does not follow {self.last}: records must be in strictly increasing chain order"
            )
        for field in ("amount_minor", "tax_minor"):
            value = getattr(cdr, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise fail(field, f"{value!r} must be an integer >= 0")
        self.count = index
        self.first = seq if self.first is None else self.first
        self.last = seq
        self.amount += cdr.amount_minor
        self.tax += cdr.tax_minor

    def summary(self, name: str, size: int) -> ExportSummary:
        return ExportSummary(name, self.count, size, self.first, self.last, self.amount, self.tax)


def _write_atomically(path: str | os.PathLike[str], produce: Callable[[BinaryIO], None], fsync: bool) -> int:
    target = Path(path)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    try:
        with open(handle, "wb") as out:
            produce(out)
            out.flush()
            if fsync:
                os.fsync(out.fileno())
            size = out.tell()
        os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    return size


def _field_names(name: str, requested: Any) -> tuple[str, ...]:
    if requested is None:
        return CDR_FIELDS
    fields = tuple(requested)
    unknown = [field for field in fields if field not in CDR_FIELDS]
    if unknown or not fields or len(set(fields)) != len(fields):
        raise ValueError(f"{name}: fields must be distinct CDR fields, got {list(fields)}")
    return fields


def _entry_values(cdr: Cdr, fields: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
    """The chain-entry values of `fields` (enums as their values, as in `Cdr.to_entry`)."""
    for field in fields:
        value = getattr(cdr, field)
        yield field, value.value if isinstance(value, enum.Enum) else value


@dataclasses.dataclass(frozen=True, slots=True)
class CsvExportFormat:
    """RFC 4180 CSV: CRLF line ends, minimal quoting, booleans `true`/`false`, None empty."""

    name: str
    columns: tuple[str, ...]
    delimiter: str
    header_row: bool
    fsync: bool = True
    file_extension: str = ".csv"

    def write(self, path: str | os.PathLike[str], header: FileHeader, records: Iterable[Cdr]) -> ExportSummary:
        checks = _RecordChecks(header, self.name)

        def produce(out: BinaryIO) -> None:
            text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=False)
            writer = csv.writer(text, delimiter=self.delimiter, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
            if self.header_row:
                writer.writerow(self.columns)
            for cdr in records:
                checks.accept(cdr)
                writer.writerow([_csv_value(value) for _, value in _entry_values(cdr, self.columns)])
            text.flush()
            text.detach()

        size = _write_atomically(path, produce, self.fsync)
        return checks.summary(self.name, size)


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@register("ATRA_CSV_V1")
def _csv_v1(options: Mapping[str, Any]) -> ExportFormat:
    _reject_unknown("ATRA_CSV_V1", options, {"columns", "delimiter", "header_row", "fsync"})
    delimiter = options.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\r\n\"":
        raise ValueError(f"ATRA_CSV_V1: delimiter must be one character other than CR, LF and '\"', got {delimiter!r}")
    return CsvExportFormat(
        "ATRA_CSV_V1",
        _field_names("ATRA_CSV_V1", options.get("columns")),
        delimiter,
        bool(options.get("header_row", True)),
        bool(options.get("fsync", True)),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class JsonLinesExportFormat:
    """One JSON object per line (UTF-8, sorted keys, no spaces, LF line ends)."""

    name: str
    fields: tuple[str, ...]
    header_line: bool
    trailer_line: bool
    fsync: bool = True
    file_extension: str = ".jsonl"

    def write(self, path: str | os.PathLike[str], header: FileHeader, records: Iterable[Cdr]) -> ExportSummary:
        checks = _RecordChecks(header, self.name)
        dumps = orjson.dumps
        option = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE

        def produce(out: BinaryIO) -> None:
            if self.header_line:
                out.write(dumps({"file": _file_identity(header)}, option=option))
            for cdr in records:
                checks.accept(cdr)
                out.write(dumps(dict(_entry_values(cdr, self.fields)), option=option))
            if self.trailer_line:
                trailer = {
                    "record_count": checks.count,
                    "first_chain_seq": checks.first,
                    "last_chain_seq": checks.last,
                    "total_amount_minor": checks.amount,
                    "total_tax_minor": checks.tax,
                }
                out.write(dumps({"trailer": trailer}, option=option))

        size = _write_atomically(path, produce, self.fsync)
        return checks.summary(self.name, size)


def _file_identity(header: FileHeader) -> dict[str, Any]:
    return {
        "operator_id": header.operator_id,
        "sender": header.sender,
        "recipient": header.recipient,
        "file_sequence_number": header.file_sequence_number,
        "transfer_cut_off": format_utc(header.transfer_cut_off),
        "file_available": format_utc(header.file_available),
        "currency": header.currency,
        "currency_exponent": header.currency_exponent,
        "test_data": header.test_data,
    }


@register("ATRA_JSONL_V1")
def _jsonl_v1(options: Mapping[str, Any]) -> ExportFormat:
    _reject_unknown("ATRA_JSONL_V1", options, {"fields", "header_line", "trailer_line", "fsync"})
    return JsonLinesExportFormat(
        "ATRA_JSONL_V1",
        _field_names("ATRA_JSONL_V1", options.get("fields")),
        bool(options.get("header_line", True)),
        bool(options.get("trailer_line", True)),
        bool(options.get("fsync", True)),
    )
