"""RAP 1.05 encode/decode: `ReturnBatch` and `Acknowledgement` <-> canonical BER.

Encoding uses asn1tools with the shipped RAP-0105 module (definite, shortest lengths; members
in definition order), after validation. Decoding rejects anything that is not exactly one
`RapDataInterChange` and, unless asked not to, validates the result with the same rules, so
a regulator's file that does not add up is reported, not silently accepted.
"""

from __future__ import annotations

from typing import Any

from .. import asn1
from ..errors import CodecDecodeError
from . import validation
from .model import (
    Acknowledgement,
    DateTimeLong,
    ErrorContext,
    ErrorDetail,
    FatalReturn,
    GroupError,
    MissingReturn,
    RapAuditControl,
    RapBatchControl,
    RapFile,
    ReturnBatch,
    ReturnDetail,
    SevereReturn,
    StopReturn,
)

# FatalReturn's error groups: (attribute, ASN.1 member, echoed TAP member or None).
FATAL_GROUPS = (
    ("transfer_batch_error", "transferBatchError", None),
    ("notification_error", "notificationError", "notification"),
    ("batch_control_error", "batchControlError", "batchControlInfo"),
    ("accounting_info_error", "accountingInfoError", "accountingInfo"),
    ("network_info_error", "networkInfoError", "networkInfo"),
    ("message_description_error", "messageDescriptionError", "messageDescriptionInfo"),
    ("audit_control_info_error", "auditControlInfoError", "auditControlInfo"),
)


def _compiled() -> Any:
    # Looked up in the RAP module: MessageDescriptionInfoList exists in both modules.
    return asn1.spec().modules[asn1.RAP_MODULE]["RapDataInterChange"]


# -- model -> asn1tools value ------------------------------------------------------------


def _ascii(text: str) -> bytes:
    return text.encode("ascii", "replace")


def _number(value: int) -> bytes:
    return b"%05d" % value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else b"?"


def _date_time(value: DateTimeLong) -> dict[str, bytes]:
    return {"localTimeStamp": _ascii(value.local), "utcTimeOffset": _ascii(value.utc_offset)}


def _operator_spec(target: dict[str, Any], items: tuple[str, ...] | None) -> None:
    if items is not None:
        target["operatorSpecList"] = [_ascii(item) for item in items]


def _error_details(details: tuple[ErrorDetail, ...]) -> list[dict[str, Any]]:
    out = []
    for detail in details:
        value: dict[str, Any] = {}
        if detail.error_context is not None:
            contexts = []
            for context in detail.error_context:
                item: dict[str, Any] = {"pathItemId": context.path_item_id}
                if context.item_occurrence is not None:
                    item["itemOccurrence"] = context.item_occurrence
                item["itemLevel"] = context.item_level
                contexts.append(item)
            value["errorContext"] = contexts
        if detail.item_offset is not None:
            value["itemOffset"] = detail.item_offset
        value["errorCode"] = detail.error_code
        out.append(value)
    return out


def _control_value(control: RapBatchControl) -> dict[str, Any]:
    value: dict[str, Any] = {
        "sender": _ascii(control.sender),
        "recipient": _ascii(control.recipient),
        "rapFileSequenceNumber": _number(control.rap_file_sequence_number),
        "rapFileCreationTimeStamp": _date_time(control.creation),
        "rapFileAvailableTimeStamp": _date_time(control.available),
    }
    if control.tap_specification_version is not None:
        value["specificationVersionNumber"] = control.tap_specification_version
    if control.tap_release_version is not None:
        value["releaseVersionNumber"] = control.tap_release_version
    value["rapSpecificationVersionNumber"] = control.rap_specification_version
    value["rapReleaseVersionNumber"] = control.rap_release_version
    if control.test_data:
        value["fileTypeIndicator"] = b"T"
    if control.roaming_partner is not None:
        value["roamingPartner"] = _ascii(control.roaming_partner)
    _operator_spec(value, control.operator_spec)
    if control.tap_decimal_places is not None:
        value["tapDecimalPlaces"] = control.tap_decimal_places
    if control.tap_currency is not None:
        value["tapCurrency"] = _ascii(control.tap_currency)
    return value


def _return_value(detail: ReturnDetail) -> tuple[str, dict[str, Any]]:
    value: dict[str, Any]
    if isinstance(detail, StopReturn):
        value = {"lastSeqNumber": _number(detail.last_seq_number)}
        _operator_spec(value, detail.operator_spec)
        return "stopReturn", value
    if isinstance(detail, MissingReturn):
        value = {"startMissingSeqNumber": _number(detail.start_missing_seq_number)}
        if detail.end_missing_seq_number is not None:
            value["endMissingSeqNumber"] = _number(detail.end_missing_seq_number)
        _operator_spec(value, detail.operator_spec)
        return "missingReturn", value
    if isinstance(detail, FatalReturn):
        value = {"fileSequenceNumber": _number(detail.file_sequence_number)}
        for attribute, member, tap_member in FATAL_GROUPS:
            group = getattr(detail, attribute)
            if group is None:
                continue
            if tap_member is None:
                value[member] = {"errorDetail": _error_details(group)}
            else:
                value[member] = {tap_member: group.tap_value, "errorDetail": _error_details(group.error_details)}
        _operator_spec(value, detail.operator_spec)
        return "fatalReturn", value
    if isinstance(detail, SevereReturn):
        value = {
            "fileSequenceNumber": _number(detail.file_sequence_number),
            "callEventDetail": detail.call_event,
            "errorDetail": _error_details(detail.error_details),
        }
        _operator_spec(value, detail.operator_spec)
        return "severeReturn", value
    raise TypeError(f"not a RAP return detail: {type(detail).__name__}")


def to_asn1(rap: RapFile) -> tuple[str, dict[str, Any]]:
    """The RAP file in asn1tools' Python form (a `RapDataInterChange` value)."""
    if isinstance(rap, ReturnBatch):
        audit: dict[str, Any] = {
            "totalSevereReturnValue": rap.audit.total_severe_return_value,
            "returnDetailsCount": rap.audit.return_details_count,
        }
        _operator_spec(audit, rap.audit.operator_spec)
        if rap.audit.total_severe_return_tax is not None:
            audit["totalSevereReturnTax"] = rap.audit.total_severe_return_tax
        return (
            "returnBatch",
            {
                "rapBatchControlInfoRap": _control_value(rap.control),
                "returnDetails": [_return_value(detail) for detail in rap.returns],
                "rapAuditControlInfo": audit,
            },
        )
    if isinstance(rap, Acknowledgement):
        value: dict[str, Any] = {
            "sender": _ascii(rap.sender),
            "recipient": _ascii(rap.recipient),
            "rapFileSequenceNumber": _number(rap.rap_file_sequence_number),
            "ackFileCreationTimeStamp": _date_time(rap.creation),
            "ackFileAvailableTimeStamp": _date_time(rap.available),
        }
        if rap.test_data:
            value["fileTypeIndicator"] = b"T"
        _operator_spec(value, rap.operator_spec)
        return "acknowledgement", value
    raise TypeError(f"not a RAP file: {type(rap).__name__}")


# -- asn1tools value -> model ------------------------------------------------------------


def _text(value: bytes) -> str:
    return value.decode("ascii", "replace")


def _seq(value: bytes) -> int:
    if not value.isdigit():
        raise CodecDecodeError(f"sequence number {value!r} is not a NumberString")
    return int(value)


def _date_time_of(value: dict[str, bytes]) -> DateTimeLong:
    return DateTimeLong(_text(value["localTimeStamp"]), _text(value["utcTimeOffset"]))


def _operator_spec_of(value: dict[str, Any]) -> tuple[str, ...] | None:
    items = value.get("operatorSpecList")
    return None if items is None else tuple(_text(item) for item in items)


def _error_details_of(details: list[dict[str, Any]]) -> tuple[ErrorDetail, ...]:
    out = []
    for detail in details:
        contexts = detail.get("errorContext")
        out.append(
            ErrorDetail(
                error_code=detail["errorCode"],
                error_context=None
                if contexts is None
                else tuple(
                    ErrorContext(c["pathItemId"], c["itemLevel"], c.get("itemOccurrence")) for c in contexts
                ),
                item_offset=detail.get("itemOffset"),
            )
        )
    return tuple(out)


def _return_of(kind: str | None, value: Any) -> ReturnDetail:
    if kind == "stopReturn":
        return StopReturn(_seq(value["lastSeqNumber"]), _operator_spec_of(value))
    if kind == "missingReturn":
        end = value.get("endMissingSeqNumber")
        return MissingReturn(
            _seq(value["startMissingSeqNumber"]), None if end is None else _seq(end), _operator_spec_of(value)
        )
    if kind == "fatalReturn":
        groups: dict[str, Any] = {}
        for attribute, member, tap_member in FATAL_GROUPS:
            if member not in value:
                continue
            group = value[member]
            if tap_member is None:
                groups[attribute] = _error_details_of(group["errorDetail"])
            else:
                groups[attribute] = GroupError(group[tap_member], _error_details_of(group["errorDetail"]))
        return FatalReturn(_seq(value["fileSequenceNumber"]), operator_spec=_operator_spec_of(value), **groups)
    if kind == "severeReturn":
        if value["callEventDetail"][0] is None:
            raise CodecDecodeError(
                "severeReturn holds a call event other than ServiceCentreUsage, which this system never sends"
            )
        return SevereReturn(
            _seq(value["fileSequenceNumber"]),
            value["callEventDetail"],
            _error_details_of(value["errorDetail"]),
            _operator_spec_of(value),
        )
    raise CodecDecodeError("returnDetails holds a return kind unknown to RAP 1.05")


def from_asn1(kind: str | None, value: Any) -> RapFile:
    if kind == "returnBatch":
        control = value["rapBatchControlInfoRap"]
        audit = value["rapAuditControlInfo"]
        return ReturnBatch(
            control=RapBatchControl(
                sender=_text(control["sender"]),
                recipient=_text(control["recipient"]),
                rap_file_sequence_number=_seq(control["rapFileSequenceNumber"]),
                creation=_date_time_of(control["rapFileCreationTimeStamp"]),
                available=_date_time_of(control["rapFileAvailableTimeStamp"]),
                tap_specification_version=control.get("specificationVersionNumber"),
                tap_release_version=control.get("releaseVersionNumber"),
                rap_specification_version=control["rapSpecificationVersionNumber"],
                rap_release_version=control["rapReleaseVersionNumber"],
                test_data=control.get("fileTypeIndicator") == b"T",
                roaming_partner=_text(control["roamingPartner"]) if "roamingPartner" in control else None,
                operator_spec=_operator_spec_of(control),
                tap_decimal_places=control.get("tapDecimalPlaces"),
                tap_currency=_text(control["tapCurrency"]) if "tapCurrency" in control else None,
            ),
            returns=tuple(_return_of(k, v) for k, v in value["returnDetails"]),
            audit=RapAuditControl(
                total_severe_return_value=audit["totalSevereReturnValue"],
                return_details_count=audit["returnDetailsCount"],
                operator_spec=_operator_spec_of(audit),
                total_severe_return_tax=audit.get("totalSevereReturnTax"),
            ),
        )
    if kind == "acknowledgement":
        return Acknowledgement(
            sender=_text(value["sender"]),
            recipient=_text(value["recipient"]),
            rap_file_sequence_number=_seq(value["rapFileSequenceNumber"]),
            creation=_date_time_of(value["ackFileCreationTimeStamp"]),
            available=_date_time_of(value["ackFileAvailableTimeStamp"]),
            test_data=value.get("fileTypeIndicator") == b"T",
            operator_spec=_operator_spec_of(value),
        )
    raise CodecDecodeError("RapDataInterChange alternative unknown to RAP 1.05")


# -- public API ------------------------------------------------------------------------


def encode_rap(rap: RapFile) -> bytes:
    """Validate and encode a RAP file (raises `CodecValidationError` naming the field)."""
    value = to_asn1(rap)
    validation.validate(rap, value)
    return _compiled().encode(value)


def decode_rap(data: bytes, *, validate: bool = True) -> RapFile:
    """Decode a RAP file; with `validate` (default) also check it against the RAP rules.

    `validate=False` is for forensics: reading a file that is known to be inconsistent.
    """
    try:
        (kind, value), used = _compiled().decode_with_length(data)
    except Exception as exc:  # asn1tools raises several error types for malformed input
        raise CodecDecodeError(f"not a RAP 1.05 RapDataInterChange: {exc}") from None
    if used != len(data):
        raise CodecDecodeError(f"{len(data) - used} octets after the end of the RapDataInterChange")
    rap = from_asn1(kind, value)
    if validate:
        validation.validate(rap, (kind, value))
    return rap
