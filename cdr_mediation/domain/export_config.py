"""Who sends what to whom: the export configuration, and the file identity of a closed day.

One JSON document (`CDR_EXPORT_CONFIG_FILE`, format ``cdr-mediation.export-config.v1``) names the
regulator's TADIG code and, per operator, its TADIG code, accounting conventions and the export
format (a name from `codecs.adapters`, with options):

    {"format": "cdr-mediation.export-config.v1", "recipient": "ATRAA", "test_data": false,
     "operators": {"op-a": {"sender": "AFGAW", "time_zone": "+0430", "currency": "AFN",
                            "currency_exponent": 2, "tap_decimal_places": 2,
                            "export_format": "ATRA_TAP_312_V1", "format_options": {}}}}

A closed day (`domain.day_close.DayClosed`) then fixes everything about its file without a clock:
the name (TD.57: ``CD`` — ``TD`` for test data — sender, recipient, 5-digit sequence), the
sequence (the day's `day_sequence`), the transfer cut-off (the end of the day, UTC: no record
of the day is later) and the time the file became available (the watermark that closed the day,
to the second). Unknown members are refused, so a misspelt option never silently does nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from typing import Any, Mapping

from cdr_mediation.codecs.adapters import DEFAULT_FORMAT, registered_formats
from cdr_mediation.codecs.header import FileHeader
from cdr_mediation.domain.cdr import parse_utc
from cdr_mediation.domain.day_close import DayClosed

EXPORT_CONFIG_FORMAT = "cdr-mediation.export-config.v1"
MAX_FILE_SEQUENCE = 99_999  # TD.57 FileSequenceNumber: five digits
_TADIG = re.compile(r"[A-Z]{3}[A-Z0-9]{2}")


class ExportConfigError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class OperatorExport:
    operator_id: str
    sender: str  # TADIG code of the operator
    time_zone: str
    currency: str
    currency_exponent: int
    tap_decimal_places: int
    export_format: str = DEFAULT_FORMAT
    format_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    recipient: str
    operators: Mapping[str, OperatorExport]
    test_data: bool = False

    def operator(self, operator_id: str) -> OperatorExport:
        try:
            return self.operators[operator_id]
        except KeyError:
            raise ExportConfigError(f"no export configuration for operator {operator_id!r}") from None

    def adapter_config(self) -> dict[str, Any]:
        """The mapping `codecs.adapters.export_format_for` reads."""
        return {"operators": {op: {"format": o.export_format, "options": dict(o.format_options)}
                              for op, o in self.operators.items()}}


def load_export_config(document: bytes) -> ExportConfig:
    try:
        value = json.loads(document)
    except json.JSONDecodeError as exc:
        raise ExportConfigError(f"export configuration is not JSON: {exc}") from None
    _members(value, "export configuration", required={"format", "recipient", "operators"}, optional={"test_data"})
    if value["format"] != EXPORT_CONFIG_FORMAT:
        raise ExportConfigError(f"format {value['format']!r}, expected {EXPORT_CONFIG_FORMAT!r}")
    recipient = _tadig(value["recipient"], "recipient")
    test_data = value.get("test_data", False)
    if not isinstance(test_data, bool):
        raise ExportConfigError("test_data must be true or false")
    if not isinstance(value["operators"], dict) or not value["operators"]:
        raise ExportConfigError("operators must be a non-empty object")
    operators = {}
    for operator_id, entry in sorted(value["operators"].items()):
        where = f"operator {operator_id!r}"
        _members(entry, where, required={"sender", "time_zone", "currency", "currency_exponent", "tap_decimal_places"},
                 optional={"export_format", "format_options"})
        sender = _tadig(entry["sender"], f"{where}: sender")
        if sender == recipient:
            raise ExportConfigError(f"{where}: sender and recipient are both {sender}")
        export_format = entry.get("export_format", DEFAULT_FORMAT)
        if export_format not in registered_formats():
            raise ExportConfigError(f"{where}: unknown export_format {export_format!r}; known: {registered_formats()}")
        operators[operator_id] = OperatorExport(
            operator_id, sender, _string(entry["time_zone"], f"{where}: time_zone"),
            _string(entry["currency"], f"{where}: currency"),
            _integer(entry["currency_exponent"], f"{where}: currency_exponent"),
            _integer(entry["tap_decimal_places"], f"{where}: tap_decimal_places"),
            export_format, dict(entry.get("format_options", {})),
        )
    return ExportConfig(recipient, operators, test_data)


def file_name(config: ExportConfig, operator: OperatorExport, sequence: int) -> str:
    if not 1 <= sequence <= MAX_FILE_SEQUENCE:
        raise ExportConfigError(f"file sequence {sequence} is outside 1..{MAX_FILE_SEQUENCE}")
    return f"{'TD' if config.test_data else 'CD'}{operator.sender}{config.recipient}{sequence:05d}"


def day_cut_off(day: str) -> dt.datetime:
    """The end of the UTC day: no record of the day is later (TAP transferCutOffTimeStamp)."""
    return dt.datetime.fromisoformat(day).replace(tzinfo=dt.timezone.utc) + dt.timedelta(days=1)


def file_header(config: ExportConfig, closed: DayClosed) -> FileHeader:
    """The header of the file for a closed day: every value from the configuration and the
    stream, none from the clock."""
    operator = config.operator(closed.operator_id)
    cut_off = day_cut_off(closed.day)
    available = max(parse_utc(closed.watermark).replace(microsecond=0), cut_off)
    return FileHeader(
        operator_id=operator.operator_id, sender=operator.sender, recipient=config.recipient,
        file_sequence_number=closed.day_sequence, transfer_cut_off=cut_off, file_available=available,
        time_zone=operator.time_zone, currency=operator.currency, currency_exponent=operator.currency_exponent,
        tap_decimal_places=operator.tap_decimal_places, test_data=config.test_data,
    )


def _members(value: Any, where: str, *, required: set[str], optional: set[str]) -> None:
    if not isinstance(value, dict):
        raise ExportConfigError(f"{where} must be an object")
    missing, unknown = required - set(value), set(value) - required - optional
    if missing or unknown:
        raise ExportConfigError(f"{where}: missing {sorted(missing)}, unknown {sorted(unknown)}")


def _tadig(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _TADIG.fullmatch(value):
        raise ExportConfigError(f"{where}: {value!r} is not a TADIG code (5 characters, e.g. AFGAW)")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ExportConfigError(f"{where} must be a non-empty string")
    return value


def _integer(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ExportConfigError(f"{where} must be an integer")
    return value
