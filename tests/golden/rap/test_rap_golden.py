"""RAP 1.05 golden files: checked-in bytes, verified independently of the encoder.

For every case in rap_golden_cases.py:
* the checked-in `.ber` decodes with the FULL reference modules (spec/asn1) to exactly the
  value an independent oracle (below, sharing no code with the codec) derives from the case's
  model value, and shows the case's literal values;
* re-encoding that value with the reference modules gives the same bytes (canonical form);
* the production encoder still produces these bytes and the production decoder gives back
  the model value (a round trip through the checked-in bytes).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from rap_golden_cases import CASES, RapCase, reference_spec

from cdr_mediation.codecs.rap import (
    Acknowledgement,
    DateTimeLong,
    ErrorDetail,
    FatalReturn,
    MissingReturn,
    ReturnBatch,
    SevereReturn,
    StopReturn,
    decode_rap,
    encode_rap,
)

ids = [case.name for case in CASES]


def test_there_are_at_least_25_golden_files():
    assert len(CASES) >= 25
    assert all(case.path.exists() for case in CASES)


# -- the oracle ------------------------------------------------------------------------------


def _dtl(value: DateTimeLong) -> dict[str, bytes]:
    return {"localTimeStamp": value.local.encode(), "utcTimeOffset": value.utc_offset.encode()}


def _seq(number: int) -> bytes:
    return str(number).zfill(5).encode()


def _with_spec(value: dict[str, Any], items: tuple[str, ...] | None) -> dict[str, Any]:
    if items is not None:
        value["operatorSpecList"] = [item.encode() for item in items]
    return value


def _errors(details: tuple[ErrorDetail, ...]) -> list[dict[str, Any]]:
    out = []
    for d in details:
        item: dict[str, Any] = {"errorCode": d.error_code}
        if d.item_offset is not None:
            item["itemOffset"] = d.item_offset
        if d.error_context is not None:
            item["errorContext"] = []
            for c in d.error_context:
                context = {"pathItemId": c.path_item_id, "itemLevel": c.item_level}
                if c.item_occurrence is not None:
                    context["itemOccurrence"] = c.item_occurrence
                item["errorContext"].append(context)
        out.append(item)
    return out


_FATAL = {
    "notification_error": ("notificationError", "notification"),
    "batch_control_error": ("batchControlError", "batchControlInfo"),
    "accounting_info_error": ("accountingInfoError", "accountingInfo"),
    "network_info_error": ("networkInfoError", "networkInfo"),
    "message_description_error": ("messageDescriptionError", "messageDescriptionInfo"),
    "audit_control_info_error": ("auditControlInfoError", "auditControlInfo"),
}


def _return(detail: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(detail, StopReturn):
        return "stopReturn", _with_spec({"lastSeqNumber": _seq(detail.last_seq_number)}, detail.operator_spec)
    if isinstance(detail, MissingReturn):
        value = {"startMissingSeqNumber": _seq(detail.start_missing_seq_number)}
        if detail.end_missing_seq_number is not None:
            value["endMissingSeqNumber"] = _seq(detail.end_missing_seq_number)
        return "missingReturn", _with_spec(value, detail.operator_spec)
    if isinstance(detail, FatalReturn):
        value = {"fileSequenceNumber": _seq(detail.file_sequence_number)}
        if detail.transfer_batch_error is not None:
            value["transferBatchError"] = {"errorDetail": _errors(detail.transfer_batch_error)}
        for attribute, (member, echoed) in _FATAL.items():
            group = getattr(detail, attribute)
            if group is not None:
                value[member] = {echoed: group.tap_value, "errorDetail": _errors(group.error_details)}
        return "fatalReturn", _with_spec(value, detail.operator_spec)
    assert isinstance(detail, SevereReturn)
    value = {
        "fileSequenceNumber": _seq(detail.file_sequence_number),
        "callEventDetail": detail.call_event,
        "errorDetail": _errors(detail.error_details),
    }
    return "severeReturn", _with_spec(value, detail.operator_spec)


def oracle(case: RapCase) -> tuple[str, dict[str, Any]]:
    rap = case.rap
    if isinstance(rap, Acknowledgement):
        value = {
            "sender": rap.sender.encode(),
            "recipient": rap.recipient.encode(),
            "rapFileSequenceNumber": _seq(rap.rap_file_sequence_number),
            "ackFileCreationTimeStamp": _dtl(rap.creation),
            "ackFileAvailableTimeStamp": _dtl(rap.available),
        }
        if rap.test_data:
            value["fileTypeIndicator"] = b"T"
        return "acknowledgement", _with_spec(value, rap.operator_spec)
    assert isinstance(rap, ReturnBatch)
    c = rap.control
    control: dict[str, Any] = {
        "sender": c.sender.encode(),
        "recipient": c.recipient.encode(),
        "rapFileSequenceNumber": _seq(c.rap_file_sequence_number),
        "rapFileCreationTimeStamp": _dtl(c.creation),
        "rapFileAvailableTimeStamp": _dtl(c.available),
        "rapSpecificationVersionNumber": 1,
        "rapReleaseVersionNumber": 5,
    }
    optional = {
        "specificationVersionNumber": c.tap_specification_version,
        "releaseVersionNumber": c.tap_release_version,
        "fileTypeIndicator": b"T" if c.test_data else None,
        "roamingPartner": c.roaming_partner.encode() if c.roaming_partner else None,
        "tapDecimalPlaces": c.tap_decimal_places,
        "tapCurrency": c.tap_currency.encode() if c.tap_currency else None,
    }
    control.update({key: value for key, value in optional.items() if value is not None})
    _with_spec(control, c.operator_spec)
    severe = [r.call_event[1]["chargeInformation"] for r in rap.returns if isinstance(r, SevereReturn)]
    audit = {
        "totalSevereReturnValue": sum(info["chargeDetailList"][0]["charge"] for info in severe),
        "returnDetailsCount": len(rap.returns),
    }
    if rap.audit.total_severe_return_tax is not None:
        audit["totalSevereReturnTax"] = sum(info["taxInformation"][0]["taxValue"] for info in severe)
    _with_spec(audit, rap.audit.operator_spec)
    return "returnBatch", {
        "rapBatchControlInfoRap": control,
        "returnDetails": [_return(detail) for detail in rap.returns],
        "rapAuditControlInfo": audit,
    }


def _at(value: Any, path: str) -> Any:
    """Follow "a.b[0].c": member names, list indexes, and CHOICE alternatives by name."""
    for name, index in re.findall(r"([A-Za-z]+)(?:\[(\d+)\])?", path):
        if isinstance(value, tuple):
            assert value[0] == name, (value[0], name)
            value = value[1]
        else:
            value = value[name]
        if index:
            value = value[int(index)]
    return value


# -- the tests -------------------------------------------------------------------------------


def _reference() -> Any:
    return reference_spec().modules["RAP-0105"]["RapDataInterChange"]


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_reference_decode_is_the_oracle_value_and_the_literal_values(case: RapCase):
    decoded = _reference().decode(case.path.read_bytes())
    assert decoded == oracle(case)
    for path, expected in case.expect.items():
        actual = decoded[0] if path == "@kind" else _at(decoded[1], path)
        assert actual == expected, path


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_reference_reencodes_to_the_same_bytes(case: RapCase):
    data = case.path.read_bytes()
    assert _reference().encode(_reference().decode(data)) == data


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_codec_round_trips_through_the_golden_bytes(case: RapCase):
    data = case.path.read_bytes()
    assert encode_rap(case.rap) == data
    assert decode_rap(data) == case.rap
