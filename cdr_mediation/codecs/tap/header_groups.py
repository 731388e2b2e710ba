"""The groups around the call events: BatchControlInfo, AccountingInfo, NetworkInfo,
MessageDescriptionInfo, AuditControlInfo, and Notification for a file without events.

They are built as asn1tools values and encoded by asn1tools with the shipped module (once per
file, so speed does not matter and the reference encoder guarantees member order), after the
constraint checker has validated them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from cdr_mediation.domain.cdr import parse_utc

from .. import asn1
from ..constraints import checker
from ..errors import CodecValidationError
from ..header import FileHeader
from .record import PATH_STATUS, BatchTotals, ScuFields, scu_value
from .timestamps import date_time_long, parse_zone

SPECIFICATION_VERSION = 3
RELEASE_VERSION = 12
HEADER = "header"


def _fail(path: str, field: str, reason: str) -> CodecValidationError:
    return CodecValidationError(path, reason, source_field=field, scope=HEADER)


def _aware(value: Any, path: str, field: str) -> dt.datetime:
    if not isinstance(value, dt.datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise _fail(path, field, "must be a timezone-aware datetime")
    return value


def header_zone(header: FileHeader) -> dt.tzinfo:
    try:
        return parse_zone(header.time_zone)
    except (ValueError, TypeError) as exc:
        raise _fail("networkInfo.utcTimeOffsetInfo", "time_zone", str(exc)) from None


def _sequence_number(value: Any, path: str, field: str) -> bytes:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 99999:
        raise _fail(path, field, f"{value!r} must be an integer in 1..99999 (NumberString SIZE(5))")
    return b"%05d" % value


def batch_control_info(header: FileHeader, zone: dt.tzinfo) -> dict[str, Any]:
    value: dict[str, Any] = {
        "sender": header.sender.encode("ascii", "replace"),
        "recipient": header.recipient.encode("ascii", "replace"),
        "fileSequenceNumber": _sequence_number(
            header.file_sequence_number, "batchControlInfo.fileSequenceNumber", "file_sequence_number"
        ),
    }
    if header.file_creation is not None:
        value["fileCreationTimeStamp"] = date_time_long(
            _aware(header.file_creation, "batchControlInfo.fileCreationTimeStamp", "file_creation"), zone
        )
    value["transferCutOffTimeStamp"] = date_time_long(
        _aware(header.transfer_cut_off, "batchControlInfo.transferCutOffTimeStamp", "transfer_cut_off"), zone
    )
    value["fileAvailableTimeStamp"] = date_time_long(
        _aware(header.file_available, "batchControlInfo.fileAvailableTimeStamp", "file_available"), zone
    )
    value["specificationVersionNumber"] = SPECIFICATION_VERSION
    value["releaseVersionNumber"] = RELEASE_VERSION
    if header.test_data:
        value["fileTypeIndicator"] = b"T"
    if header.rap_file_sequence_number is not None:
        value["rapFileSequenceNumber"] = _sequence_number(
            header.rap_file_sequence_number, "batchControlInfo.rapFileSequenceNumber", "rap_file_sequence_number"
        )
    return value


def notification(header: FileHeader, zone: dt.tzinfo) -> dict[str, Any]:
    """A file with no call events (TD.57: a Notification, not an empty TransferBatch)."""
    control = batch_control_info(header, zone)
    order = (
        "sender",
        "recipient",
        "fileSequenceNumber",
        "rapFileSequenceNumber",
        "fileCreationTimeStamp",
        "fileAvailableTimeStamp",
        "transferCutOffTimeStamp",
        "specificationVersionNumber",
        "releaseVersionNumber",
        "fileTypeIndicator",
    )
    return {name: control[name] for name in order if name in control}


def accounting_info(header: FileHeader) -> dict[str, Any]:
    codes = header.codes
    taxation: dict[str, Any] = {"taxCode": codes.tax_code, "taxType": codes.tax_type.encode("ascii", "replace")}
    if codes.tax_rate is not None:
        taxation["taxRate"] = codes.tax_rate.encode("ascii", "replace")
    currency = header.currency.encode("ascii", "replace")
    return {
        "taxation": [taxation],
        "localCurrency": currency,
        # Without tapCurrency TAP amounts would be read as SDR; they are in the local currency.
        "tapCurrency": currency,
        "currencyConversionInfo": [
            {"exchangeRateCode": codes.exchange_rate_code, "numberOfDecimalPlaces": 0, "exchangeRate": 1}
        ],
        "tapDecimalPlaces": header.tap_decimal_places,
    }


def network_info(header: FileHeader, offsets: list[str], rec_entities: list[str]) -> dict[str, Any]:
    return {
        "utcTimeOffsetInfo": [
            {"utcTimeOffsetCode": code, "utcTimeOffset": offset.encode("ascii")} for code, offset in enumerate(offsets)
        ],
        "recEntityInfo": [
            {
                "recEntityCode": code,
                "recEntityType": header.codes.rec_entity_type,
                "recEntityId": smsc_id.encode("ascii"),
            }
            for code, smsc_id in enumerate(rec_entities)
        ],
    }


def message_description_info(header: FileHeader) -> list[dict[str, Any]]:
    codes = header.codes
    return [
        {
            "messageDescriptionCode": codes.message_description_code,
            "messageDescription": codes.message_description.encode("ascii", "replace"),
        }
    ]


def audit_control_info(totals: BatchTotals, zone: dt.tzinfo) -> dict[str, Any]:
    assert totals.earliest is not None and totals.latest is not None
    return {
        "earliestCallTimeStamp": date_time_long(parse_utc(totals.earliest), zone),
        "latestCallTimeStamp": date_time_long(parse_utc(totals.latest), zone),
        "totalCharge": totals.total_charge,
        "totalTaxValue": totals.total_tax,
        "totalDiscountValue": 0,
        "callEventDetailsCount": totals.count,
    }


def _check(type_name: str, value: Any, path: str) -> None:
    checker().check(type_name, value, path=path, scope=HEADER)


def validate_header(header: FileHeader) -> dt.tzinfo:
    """Check everything about the header before a single byte is written; return its zone.

    Structural rules (mandatory items, SIZE, character sets, ranges) are checked by running
    the constraint checker over the header groups as they will be written, and over a record
    built from the TAP codes, so a bad code value fails here rather than in record 1.
    """
    if not isinstance(header.operator_id, str) or not header.operator_id:
        raise _fail("batchControlInfo", "operator_id", "must be a non-empty string")
    for field in ("sender", "recipient", "currency", "time_zone"):
        if not isinstance(getattr(header, field), str):
            raise _fail("batchControlInfo", field, "must be a string")
    zone = header_zone(header)
    control = batch_control_info(header, zone)
    if header.sender == header.recipient:
        raise _fail("batchControlInfo.recipient", "recipient", "sender and recipient must differ")
    if header.file_available < header.transfer_cut_off:
        raise _fail(
            "batchControlInfo.fileAvailableTimeStamp", "file_available", "must not be earlier than the transfer cut-off"
        )
    if header.file_creation is not None and header.file_creation > header.file_available:
        raise _fail("batchControlInfo.fileCreationTimeStamp", "file_creation", "must not be later than file_available")
    exponent = header.currency_exponent
    if not isinstance(exponent, int) or isinstance(exponent, bool) or not 0 <= exponent <= 4:
        raise _fail(
            "accountingInfo.localCurrency", "currency_exponent", f"{exponent!r} must be an ISO 4217 exponent 0..4"
        )
    places = header.tap_decimal_places
    if not isinstance(places, int) or isinstance(places, bool):
        raise _fail("accountingInfo.tapDecimalPlaces", "tap_decimal_places", f"{places!r} must be an integer")
    statuses = [status for status, _ in header.codes.message_status]
    if len(set(statuses)) != len(statuses):
        raise _fail(PATH_STATUS, "codes.message_status", "a status is listed twice")
    _check("BatchControlInfo", control, "batchControlInfo")
    _check("Notification", notification(header, zone), "notification")
    _check("AccountingInfo", accounting_info(header), "accountingInfo")
    _check("MessageDescriptionInfoList", message_description_info(header), "messageDescriptionInfo")
    _check("NetworkInfo", network_info(header, ["+0000"], ["SMSC"]), "networkInfo")
    # A record built from the codes: a bad code value fails here, not in record 1. Status
    # codes are plain INTEGERs (MessageStatus); each is checked in the same position.
    for _, code in header.codes.message_status:
        if not isinstance(code, int) or isinstance(code, bool) or not -(1 << 63) <= code < (1 << 63):
            raise _fail(PATH_STATUS, "codes.message_status", f"{code!r} is not an 8-octet INTEGER")
    status = header.codes.message_status[0][1] if header.codes.message_status else 0
    template = ScuFields(b"\x11", b"X", 0, 0, 1, 1, 0, 0, status, b"20000101000000", 0, b"20000101000000", 0, (b"x",))
    _check("CallEventDetail", scu_value(template, header), "callEventDetails[*]")
    return zone


def encode(type_name: str, value: Any) -> bytes:
    """BER of a TAP type with the shipped module (asn1tools: definite, shortest lengths).

    Looked up in the TAP module explicitly: MessageDescriptionInfoList exists in RAP too.
    """
    return asn1.spec().modules[asn1.TAP_MODULE][type_name].encode(value)
