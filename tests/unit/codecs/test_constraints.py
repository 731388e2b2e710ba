"""The rules the ASN.1 does not enforce, each with a value that breaks it and the message."""

from __future__ import annotations

from typing import Any

import pytest

from cdr_mediation.codecs import asn1
from cdr_mediation.codecs.constraints import checker
from cdr_mediation.codecs.errors import CodecValidationError

DTL = {"localTimeStamp": b"20260302043000", "utcTimeOffset": b"+0430"}
CONTROL = {
    "sender": b"AFGAW",
    "recipient": b"AFGRA",
    "fileSequenceNumber": b"00042",
    "transferCutOffTimeStamp": DTL,
    "fileAvailableTimeStamp": DTL,
    "specificationVersionNumber": 3,
    "releaseVersionNumber": 12,
}


def _check(type_name: str, value: Any, **kwargs: Any) -> None:
    checker().check(type_name, value, path=type_name[0].lower() + type_name[1:], scope="header", **kwargs)


def _control(**changes: Any) -> dict[str, Any]:
    value = dict(CONTROL)
    for key, new in changes.items():
        if new is None:
            value.pop(key)
        else:
            value[key] = new
    return value


def test_a_valid_batch_control_info_passes():
    _check("BatchControlInfo", CONTROL)


CASES = [
    # (id, type, value, expected message)
    ("mandatory-item-tap", "BatchControlInfo", _control(sender=None),
     "header: batchControlInfo.sender: mandatory item of BatchControlInfo is missing"),
    ("mandatory-item-nested", "BatchControlInfo", _control(transferCutOffTimeStamp={"localTimeStamp": b"20260302043000"}),
     "header: batchControlInfo.transferCutOffTimeStamp.utcTimeOffset: mandatory item of DateTimeLong is missing"),
    ("unknown-member", "BatchControlInfo", _control(fileName=b"x"),
     "header: batchControlInfo.fileName: is not a member of BatchControlInfo"),
    ("sequence-type", "BatchControlInfo", [CONTROL],
     "header: batchControlInfo: expected a SEQUENCE (dict), got list"),
    ("sequence-of-type", "UtcTimeOffsetInfoList", {"utcTimeOffsetCode": 0},
     "header: utcTimeOffsetInfoList: expected a list, got dict"),
    ("integer-type", "BatchControlInfo", _control(releaseVersionNumber="12"),
     "header: batchControlInfo.releaseVersionNumber: expected an INTEGER, got str"),
    ("integer-not-bool", "BatchControlInfo", _control(releaseVersionNumber=True),
     "header: batchControlInfo.releaseVersionNumber: expected an INTEGER, got bool"),
    ("octets-type", "BatchControlInfo", _control(sender="AFGAW"),
     "header: batchControlInfo.sender: expected an OCTET STRING (bytes), got str"),
    ("integer-8-octets", "AuditControlInfo",
     {"totalCharge": 1 << 63, "totalTaxValue": 0, "totalDiscountValue": 0, "callEventDetailsCount": 1},
     f"header: auditControlInfo.totalCharge: INTEGER {1 << 63} does not fit in 8 octets"),
    ("absolute-amount-negative", "AuditControlInfo",
     {"totalCharge": -1, "totalTaxValue": 0, "totalDiscountValue": 0, "callEventDetailsCount": 1},
     "header: auditControlInfo.totalCharge: AbsoluteAmount must be >= 0, got -1"),
    ("count-negative", "AuditControlInfo",
     {"totalCharge": 0, "totalTaxValue": 0, "totalDiscountValue": 0, "callEventDetailsCount": -1},
     "header: auditControlInfo.callEventDetailsCount: CallEventDetailsCount must be >= 0, got -1"),
    ("code-negative", "UtcTimeOffsetInfo", {"utcTimeOffsetCode": -1, "utcTimeOffset": b"+0430"},
     "header: utcTimeOffsetInfo.utcTimeOffsetCode: Code must be >= 0, got -1"),
    ("tap-decimal-places-range", "AccountingInfo", {"localCurrency": b"AFN", "tapDecimalPlaces": 7},
     "header: accountingInfo.tapDecimalPlaces: TapDecimalPlaces must be in 0..6, got 7"),
    ("empty-octets", "MessageDescriptionInformation", {"messageDescriptionCode": 1, "messageDescription": b""},
     "header: messageDescriptionInformation.messageDescription: must not be empty (zero-length elements are not allowed)"),
    ("size-fixed", "BatchControlInfo", _control(fileSequenceNumber=b"0042"),
     "header: batchControlInfo.fileSequenceNumber: size 4 octets breaks FileSequenceNumber SIZE(5)"),
    ("size-range", "GsmChargeableSubscriber", {"msisdn": bytes(10)},
     "header: gsmChargeableSubscriber.msisdn: size 10 octets breaks Msisdn SIZE(1..9)"),
    ("ascii-visible", "MessageDescriptionInformation", {"messageDescriptionCode": 1, "messageDescription": b"A2P\tSMS"},
     "header: messageDescriptionInformation.messageDescription: AsciiString must contain visible ISO 646 characters (0x20-0x7E) only, got b'A2P\\tSMS'"),
    ("ascii-trailing-space", "MessageDescriptionInformation", {"messageDescriptionCode": 1, "messageDescription": b"A2P "},
     "header: messageDescriptionInformation.messageDescription: AsciiString must not have leading or trailing spaces (receivers discard them), got b'A2P '"),
    ("ascii-only-spaces", "MessageDescriptionInformation", {"messageDescriptionCode": 1, "messageDescription": b"   "},
     "header: messageDescriptionInformation.messageDescription: AsciiString cannot contain only spaces, got b'   '"),
    ("number-string", "BatchControlInfo", _control(fileSequenceNumber=b"0004A"),
     "header: batchControlInfo.fileSequenceNumber: NumberString must contain digits 0-9 only, got b'0004A'"),
    ("bcd-filler-inside", "GsmChargeableSubscriber", {"msisdn": bytes.fromhex("93f1")},
     "header: gsmChargeableSubscriber.msisdn: BCDString must hold digits 0-9/a-e, with a single trailing 'f' filler at most, got b'\\x93\\xf1'"),
    ("bcd-double-filler", "GsmChargeableSubscriber", {"msisdn": bytes.fromhex("93ff")},
     "header: gsmChargeableSubscriber.msisdn: BCDString must hold digits 0-9/a-e, with a single trailing 'f' filler at most, got b'\\x93\\xff'"),
    ("currency", "AccountingInfo", {"localCurrency": b"afn", "tapDecimalPlaces": 3},
     "header: accountingInfo.localCurrency: Currency must be an ISO 4217 code (3 letters A-Z), got b'afn'"),
    ("plmn-tadig", "BatchControlInfo", _control(recipient=b"12345"),
     "header: batchControlInfo.recipient: PlmnId must be a TADIG code: 3 letters A-Z then 2 letters or digits, got b'12345'"),
    ("local-time-stamp", "BatchControlInfo", _control(fileAvailableTimeStamp={"localTimeStamp": b"20260230120000", "utcTimeOffset": b"+0430"}),
     "header: batchControlInfo.fileAvailableTimeStamp.localTimeStamp: LocalTimeStamp must be a valid CCYYMMDDhhmmss, got b'20260230120000'"),
    ("utc-offset", "BatchControlInfo", _control(fileAvailableTimeStamp={"localTimeStamp": b"20260302043000", "utcTimeOffset": b"+1500"}),
     "header: batchControlInfo.fileAvailableTimeStamp.utcTimeOffset: UtcTimeOffset must be +HHMM or -HHMM with HH <= 14 and MM <= 59, got b'+1500'"),
    ("file-sequence-zero", "BatchControlInfo", _control(fileSequenceNumber=b"00000"),
     "header: batchControlInfo.fileSequenceNumber: FileSequenceNumber must be in 00001-99999, got b'00000'"),
    ("choice-alternative", "CallEventDetail", ("mobileOriginatedCall", {}),
     "header: callEventDetail: unsupported alternative 'mobileOriginatedCall'"),
    ("choice-shape", "CallEventDetail", {"serviceCentreUsage": {}},
     "header: callEventDetail: expected a CHOICE as (alternative, value)"),
]


@pytest.mark.parametrize(("type_name", "value", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rule_violation_is_reported_with_path_and_reason(type_name: str, value: Any, message: str):
    with pytest.raises(CodecValidationError) as error:
        _check(type_name, value)
    assert str(error.value) == message


def test_rap_members_without_optional_are_mandatory():
    with pytest.raises(CodecValidationError) as error:
        checker().check(
            "StopReturn", {}, path="returnDetails[0].stopReturn", scope="ReturnBatch", module=asn1.RAP_MODULE
        )
    assert str(error.value) == "ReturnBatch: returnDetails[0].stopReturn.lastSeqNumber: mandatory item of StopReturn is missing"


def test_rap_types_resolve_in_rap_first_then_in_tap():
    # RAP's own MessageDescriptionInfoList has no mandatory items; TAP's has two.
    value = [{"messageDescriptionCode": 1}]
    checker().check("MessageDescriptionInfoList", value, path="m", scope="s", module=asn1.RAP_MODULE)
    with pytest.raises(CodecValidationError, match="mandatory item of MessageDescriptionInformation"):
        checker().check("MessageDescriptionInfoList", value, path="m", scope="s", module=asn1.TAP_MODULE)


def test_opaque_types_are_not_looked_into():
    broken = _control(sender=b"X")
    value = {"batchControlInfo": broken, "errorDetail": [{"errorCode": 1}]}
    checker().check(
        "BatchControlError", value, path="e", scope="s", module=asn1.RAP_MODULE, opaque=frozenset({"BatchControlInfo"})
    )
    with pytest.raises(CodecValidationError, match="PlmnId SIZE"):
        checker().check("BatchControlError", value, path="e", scope="s", module=asn1.RAP_MODULE)
