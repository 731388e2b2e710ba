"""RAP 1.05 (GSMA TD.32) as plain values: what we read from the regulator and may send.

A RAP file is either a `ReturnBatch` (records or whole files returned as erroneous, or
sequence numbers reported missing) or an `Acknowledgement` (receipt of a RAP file).

TAP structures that RAP echoes back (the returned call event of a SevereReturn, the batch
header of a FatalReturn, ...) are kept in asn1tools' Python form, exactly as received: they
are returned *because* something in them is wrong, so they are not re-validated or
normalised. `tap.reader` turns a returned ServiceCentreUsage into CDR terms.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Union

from ..tap.timestamps import date_time_long

RAP_SPECIFICATION_VERSION = 1
RAP_RELEASE_VERSION = 5  # RAP 1.05
TAP_SPECIFICATION_VERSION = 3
TAP_RELEASE_VERSION = 12


@dataclasses.dataclass(frozen=True, slots=True)
class DateTimeLong:
    """A TAP/RAP file timestamp: local time and its literal UTC offset, kept as written."""

    local: str  # CCYYMMDDhhmmss
    utc_offset: str  # +HHMM / -HHMM

    @classmethod
    def of(cls, moment: dt.datetime, zone: dt.tzinfo) -> "DateTimeLong":
        value = date_time_long(moment, zone)
        return cls(value["localTimeStamp"].decode("ascii"), value["utcTimeOffset"].decode("ascii"))

    def to_utc(self) -> dt.datetime:
        moment = dt.datetime.strptime(self.local, "%Y%m%d%H%M%S")
        delta = dt.timedelta(hours=int(self.utc_offset[1:3]), minutes=int(self.utc_offset[3:5]))
        zone = dt.timezone(-delta if self.utc_offset.startswith("-") else delta)
        return moment.replace(tzinfo=zone).astimezone(dt.timezone.utc)


@dataclasses.dataclass(frozen=True, slots=True)
class ErrorContext:
    """Where in the returned structure the error is (TD.32 item path and level)."""

    path_item_id: int
    item_level: int
    item_occurrence: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ErrorDetail:
    error_code: int
    error_context: tuple[ErrorContext, ...] | None = None
    item_offset: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class RapBatchControl:
    sender: str  # TADIG of the network returning the records
    recipient: str
    rap_file_sequence_number: int  # 1..99999
    creation: DateTimeLong
    available: DateTimeLong
    tap_specification_version: int | None = TAP_SPECIFICATION_VERSION
    tap_release_version: int | None = TAP_RELEASE_VERSION
    rap_specification_version: int = RAP_SPECIFICATION_VERSION
    rap_release_version: int = RAP_RELEASE_VERSION
    test_data: bool = False  # fileTypeIndicator "T"
    roaming_partner: str | None = None
    operator_spec: tuple[str, ...] | None = None
    tap_decimal_places: int | None = None
    tap_currency: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class StopReturn:
    """The sender stops TAP transfers after file `last_seq_number`."""

    last_seq_number: int
    operator_spec: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class MissingReturn:
    """TAP files with these sequence numbers were never received."""

    start_missing_seq_number: int
    end_missing_seq_number: int | None = None
    operator_spec: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class GroupError:
    """A TAP group echoed back with what is wrong in it (FatalReturn)."""

    tap_value: Any  # asn1tools form of the echoed group, as received
    error_details: tuple[ErrorDetail, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class FatalReturn:
    """A whole TAP file is rejected; at least one of the error groups is present."""

    file_sequence_number: int
    transfer_batch_error: tuple[ErrorDetail, ...] | None = None
    notification_error: GroupError | None = None
    batch_control_error: GroupError | None = None
    accounting_info_error: GroupError | None = None
    network_info_error: GroupError | None = None
    message_description_error: GroupError | None = None
    audit_control_info_error: GroupError | None = None
    operator_spec: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class SevereReturn:
    """One call event of TAP file `file_sequence_number` is returned with its errors."""

    file_sequence_number: int
    call_event: Any  # asn1tools form of the CallEventDetail, e.g. ("serviceCentreUsage", {...})
    error_details: tuple[ErrorDetail, ...]
    operator_spec: tuple[str, ...] | None = None


ReturnDetail = Union[StopReturn, MissingReturn, FatalReturn, SevereReturn]


@dataclasses.dataclass(frozen=True, slots=True)
class RapAuditControl:
    total_severe_return_value: int  # TAP units of the returned records' charges
    return_details_count: int
    operator_spec: tuple[str, ...] | None = None
    total_severe_return_tax: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ReturnBatch:
    control: RapBatchControl
    returns: tuple[ReturnDetail, ...]
    audit: RapAuditControl


@dataclasses.dataclass(frozen=True, slots=True)
class Acknowledgement:
    sender: str
    recipient: str
    rap_file_sequence_number: int
    creation: DateTimeLong
    available: DateTimeLong
    test_data: bool = False
    operator_spec: tuple[str, ...] | None = None


RapFile = Union[ReturnBatch, Acknowledgement]


def severe_return_amounts(call_event: Any) -> tuple[int, int]:
    """(charge, tax) that a returned call event contributes to the RAP audit totals.

    TD.32's totals are the returned events' charges: per ChargeInformation the "00" (total
    charge) ChargeDetail, so that a break-down into other charge types is not counted twice,
    plus the TaxInformation tax values. Only ServiceCentreUsage, the one kind this system
    writes, is understood; any other event counts zero and is rejected by validation.
    """
    name, event = call_event
    if name != "serviceCentreUsage" or not isinstance(event, dict):
        return 0, 0
    information = event.get("chargeInformation")
    if not isinstance(information, dict):
        return 0, 0
    charge = sum(
        detail.get("charge", 0)
        for detail in information.get("chargeDetailList", [])
        if detail.get("chargeType") == b"00"
    )
    tax = sum(item.get("taxValue", 0) for item in information.get("taxInformation", []))
    return charge, tax


def return_batch(
    control: RapBatchControl,
    returns: tuple[ReturnDetail, ...],
    *,
    operator_spec: tuple[str, ...] | None = None,
    with_tax_total: bool = True,
) -> ReturnBatch:
    """A ReturnBatch whose audit totals are computed from its returns (for writing our own)."""
    severe = [severe_return_amounts(r.call_event) for r in returns if isinstance(r, SevereReturn)]
    audit = RapAuditControl(
        total_severe_return_value=sum(charge for charge, _ in severe),
        return_details_count=len(returns),
        operator_spec=operator_spec,
        total_severe_return_tax=sum(tax for _, tax in severe) if with_tax_total else None,
    )
    return ReturnBatch(control, tuple(returns), audit)
