"""RAP 1.05: every validation rule with its message, decode errors, and a round-trip property."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdr_mediation.codecs import asn1
from cdr_mediation.codecs.errors import CodecDecodeError, CodecValidationError
from cdr_mediation.codecs.rap import (
    Acknowledgement,
    DateTimeLong,
    ErrorContext,
    ErrorDetail,
    FatalReturn,
    GroupError,
    MissingReturn,
    RapAuditControl,
    RapBatchControl,
    ReturnBatch,
    SevereReturn,
    StopReturn,
    decode_rap,
    encode_rap,
    return_batch,
    severe_return_amounts,
)
from cdr_mediation.codecs.rap.codec import to_asn1
from cdr_mediation.codecs.tap import decode_tap_file, encode_tap_file

from .codec_factories import make_cdr, make_header, reference_rap, visible_ascii

CREATED = DateTimeLong("20260303090000", "+0430")
AVAILABLE = DateTimeLong("20260303091500", "+0430")
CONTROL = RapBatchControl("AFGRA", "AFGAW", 12, CREATED, AVAILABLE)
_tap = asn1.spec().modules[asn1.TAP_MODULE]["DataInterChange"]


def _event(seq: int = 1, amount: int = 150, tax: int = 15) -> Any:
    """A ServiceCentreUsage record as our TAP encoder writes it (asn1tools form)."""
    data = encode_tap_file(make_header(), [make_cdr(seq, amount_minor=amount, tax_minor=tax)])
    return _tap.decode(data)[1]["callEventDetails"][0]


def _batch(*returns: Any, **audit: Any) -> ReturnBatch:
    batch = return_batch(CONTROL, tuple(returns))
    return dataclasses.replace(batch, audit=dataclasses.replace(batch.audit, **audit)) if audit else batch


SEVERE = SevereReturn(42, _event(), (ErrorDetail(34),))
RB = "ReturnBatch"
ACK = Acknowledgement("AFGAW", "AFGRA", 12, CREATED, AVAILABLE)

RULES: list[tuple[str, Any, str]] = [
    ("sender-size", dataclasses.replace(_batch(SEVERE), control=dataclasses.replace(CONTROL, sender="AFGR")),
     f"{RB}: rapBatchControlInfoRap.sender: size 4 octets breaks PlmnId SIZE(5)"),
    ("sequence-zero", dataclasses.replace(_batch(SEVERE), control=dataclasses.replace(CONTROL, rap_file_sequence_number=0)),
     f"{RB}: rapBatchControlInfoRap.rapFileSequenceNumber: FileSequenceNumber must be in 00001-99999, got b'00000'"),
    ("sequence-large", _batch(StopReturn(123456)),
     f"{RB}: returnDetails[0].stopReturn.lastSeqNumber: size 6 octets breaks FileSequenceNumber SIZE(5)"),
    ("timestamp", dataclasses.replace(_batch(SEVERE), control=dataclasses.replace(CONTROL, creation=DateTimeLong("20260230090000", "+0430"))),
     f"{RB}: rapBatchControlInfoRap.rapFileCreationTimeStamp.localTimeStamp: LocalTimeStamp must be a valid CCYYMMDDhhmmss, got b'20260230090000'"),
    ("currency", dataclasses.replace(_batch(SEVERE), control=dataclasses.replace(CONTROL, tap_currency="afn")),
     f"{RB}: rapBatchControlInfoRap.tapCurrency: Currency must be an ISO 4217 code (3 letters A-Z), got b'afn'"),
    ("operator-spec", _batch(StopReturn(9, ("bad\x00item",))),
     f"{RB}: returnDetails[0].stopReturn.operatorSpecList[0]: AsciiString must contain visible ISO 646 characters (0x20-0x7E) only, got b'bad\\x00item'"),
    ("rap-version", dataclasses.replace(_batch(SEVERE), control=dataclasses.replace(CONTROL, rap_release_version=4)),
     f"{RB}: rapBatchControlInfoRap.rapReleaseVersionNumber: RAP 1.04 is not RAP 1.05"),
    ("same-parties", dataclasses.replace(_batch(SEVERE), control=dataclasses.replace(CONTROL, recipient="AFGRA")),
     f"{RB}: rapBatchControlInfoRap.recipient: sender and recipient must differ"),
    ("available-before-creation", dataclasses.replace(_batch(SEVERE), control=dataclasses.replace(CONTROL, available=DateTimeLong("20260303040000", "+0000"))),
     f"{RB}: rapBatchControlInfoRap.rapFileAvailableTimeStamp: is earlier than rapFileCreationTimeStamp"),
    ("no-returns", _batch(), f"{RB}: returnDetails: a ReturnBatch returns at least one item"),
    ("missing-range", _batch(MissingReturn(41, 40)), f"{RB}: returnDetails[0].missingReturn.endMissingSeqNumber: is before startMissingSeqNumber"),
    ("fatal-without-group", _batch(FatalReturn(42)),
     f"{RB}: returnDetails[0].fatalReturn: names no erroneous group (at least one *Error is required)"),
    ("fatal-empty-errors", _batch(FatalReturn(42, transfer_batch_error=())),
     f"{RB}: returnDetails[0].fatalReturn.transferBatchError.errorDetail: an error is reported with at least one ErrorDetail"),
    ("severe-empty-errors", _batch(SevereReturn(42, _event(), ())),
     f"{RB}: returnDetails[0].severeReturn.errorDetail: an error is reported with at least one ErrorDetail"),
    ("error-code", _batch(SevereReturn(42, _event(), (ErrorDetail(-1),))),
     f"{RB}: returnDetails[0].severeReturn.errorDetail[0].errorCode: must be >= 0"),
    ("item-offset", _batch(SevereReturn(42, _event(), (ErrorDetail(1, item_offset=-3),))),
     f"{RB}: returnDetails[0].severeReturn.errorDetail[0].itemOffset: must be >= 0"),
    ("path-item", _batch(FatalReturn(42, transfer_batch_error=(ErrorDetail(1, (ErrorContext(0, 1),)),))),
     f"{RB}: returnDetails[0].fatalReturn.transferBatchError.errorDetail[0].errorContext[0].pathItemId: must be >= 1"),
    ("item-level", _batch(SevereReturn(42, _event(), (ErrorDetail(1, (ErrorContext(12, 0),)),))),
     f"{RB}: returnDetails[0].severeReturn.errorDetail[0].errorContext[0].itemLevel: must be >= 1 (1 is the top level)"),
    ("item-occurrence", _batch(SevereReturn(42, _event(), (ErrorDetail(1, (ErrorContext(12, 1, 0),)),))),
     f"{RB}: returnDetails[0].severeReturn.errorDetail[0].errorContext[0].itemOccurrence: must be >= 1"),
    ("severe-other-event", _batch(SevereReturn(42, ("mobileSession", {}), (ErrorDetail(1),))),
     f"{RB}: returnDetails[0].severeReturn.callEventDetail: only ServiceCentreUsage events are exchanged with this system"),
    ("count", _batch(SEVERE, return_details_count=2),
     f"{RB}: rapAuditControlInfo.returnDetailsCount: 2 but the batch returns 1 items"),
    ("total-value", _batch(SEVERE, total_severe_return_value=1),
     f"{RB}: rapAuditControlInfo.totalSevereReturnValue: 1 but the severe returns' charges add up to 1500"),
    ("total-tax", _batch(SEVERE, total_severe_return_tax=1),
     f"{RB}: rapAuditControlInfo.totalSevereReturnTax: 1 but the severe returns' taxes add up to 150"),
    ("count-negative", _batch(SEVERE, return_details_count=-1),
     f"{RB}: rapAuditControlInfo.returnDetailsCount: ReturnDetailsCount must be >= 0, got -1"),
    ("total-negative", _batch(SEVERE, total_severe_return_value=-1),
     f"{RB}: rapAuditControlInfo.totalSevereReturnValue: AbsoluteAmount must be >= 0, got -1"),
    ("ack-sender", dataclasses.replace(ACK, sender="AFGAW1"), "Acknowledgement: sender: size 6 octets breaks PlmnId SIZE(5)"),
    ("ack-same-parties", dataclasses.replace(ACK, recipient="AFGAW"), "Acknowledgement: recipient: sender and recipient must differ"),
    ("ack-available-before-creation", dataclasses.replace(ACK, available=DateTimeLong("20260303080000", "+0430")),
     "Acknowledgement: ackFileAvailableTimeStamp: is earlier than ackFileCreationTimeStamp"),
    ("ack-offset", dataclasses.replace(ACK, creation=DateTimeLong("20260303090000", "0430")),
     "Acknowledgement: ackFileCreationTimeStamp.utcTimeOffset: size 4 octets breaks UtcTimeOffset SIZE(5)"),
]


@pytest.mark.parametrize(("rap", "message"), [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_rule_is_enforced_on_encode(rap: Any, message: str):
    with pytest.raises(CodecValidationError) as error:
        encode_rap(rap)
    assert str(error.value) == message


def _encode_unchecked(rap: Any) -> bytes:
    return asn1.spec().modules[asn1.RAP_MODULE]["RapDataInterChange"].encode(to_asn1(rap))


@pytest.mark.parametrize("name", ["total-value", "count", "missing-range", "ack-same-parties", "rap-version"])
def test_rules_are_enforced_on_decode_unless_reading_forensically(name: str):
    rap, message = next((r[1], r[2]) for r in RULES if r[0] == name)
    data = _encode_unchecked(rap)
    with pytest.raises(CodecValidationError) as error:
        decode_rap(data)
    assert str(error.value) == message
    assert decode_rap(data, validate=False) == rap


def test_file_type_indicator_other_than_t_is_rejected_on_decode():
    kind, value = to_asn1(ACK)
    value["fileTypeIndicator"] = b"X"
    data = asn1.spec().modules[asn1.RAP_MODULE]["RapDataInterChange"].encode((kind, value))
    with pytest.raises(CodecValidationError) as error:
        decode_rap(data)
    assert str(error.value) == "Acknowledgement: fileTypeIndicator: only 'T' (test data) is defined"
    kind, value = to_asn1(_batch(SEVERE))
    value["rapBatchControlInfoRap"]["fileTypeIndicator"] = b"X"
    data = asn1.spec().modules[asn1.RAP_MODULE]["RapDataInterChange"].encode((kind, value))
    with pytest.raises(CodecValidationError, match="rapBatchControlInfoRap.fileTypeIndicator: only 'T'"):
        decode_rap(data)


def test_echoed_tap_groups_are_not_validated():
    broken_control = {"sender": b"X"}  # missing mandatory items, wrong size: echoed as received
    rap = _batch(FatalReturn(42, batch_control_error=GroupError(broken_control, (ErrorDetail(10),))))
    assert decode_rap(encode_rap(rap)) == rap


def test_decode_rejects_garbage_trailing_octets_and_foreign_events():
    with pytest.raises(CodecDecodeError, match="RapDataInterChange alternative unknown to RAP 1.05"):
        decode_rap(b"\x30\x03\x02\x01\x01")  # a well-formed TLV that is no RAP alternative
    with pytest.raises(CodecDecodeError, match="not a RAP 1.05 RapDataInterChange"):
        decode_rap(b"\x7f\x84\x17\x05\x00")  # an Acknowledgement cut short
    with pytest.raises(CodecDecodeError, match="2 octets after the end"):
        decode_rap(encode_rap(ACK) + b"\x00\x00")
    moc = ("mobileOriginatedCall", {"basicCallInformation": {"totalCallEventDuration": 5}})
    value = to_asn1(_batch(SEVERE))
    value[1]["returnDetails"][0][1]["callEventDetail"] = moc
    data = reference_rap().encode(value)  # the full reference module can write any call event
    with pytest.raises(CodecDecodeError, match="other than ServiceCentreUsage"):
        decode_rap(data)


def test_tap_reader_rejects_garbage_and_trailing_octets():
    data = encode_tap_file(make_header(), [make_cdr()])
    with pytest.raises(CodecDecodeError, match="octets after the end"):
        decode_tap_file(data + b"\x00")
    with pytest.raises(CodecDecodeError, match="not a TAP DataInterChange"):
        decode_tap_file(b"\x04\x01")


def test_severe_return_amounts_count_the_total_charge_only():
    kind, event = _event(amount=200, tax=20)
    event["chargeInformation"]["chargeDetailList"].append({"chargeType": b"01", "charge": 999})
    assert severe_return_amounts((kind, event)) == (2000, 200)
    assert severe_return_amounts(("mobileSession", {})) == (0, 0)


def test_a_returned_record_names_the_cdr_it_came_from():
    rap = return_batch(CONTROL, (SevereReturn(42, _event(7), (ErrorDetail(34),)),))
    returned = decode_rap(encode_rap(rap))
    assert isinstance(returned, ReturnBatch)
    items = returned.returns[0].call_event[1]["operatorSpecInformation"]
    assert items[:2] == [f"cdr_id={make_cdr(7).cdr_id}".encode(), b"chain_seq=7"]


# -- round-trip property ---------------------------------------------------------------------

_seq = st.integers(1, 99999)
_texts = st.none() | st.lists(visible_ascii(20), max_size=3).map(tuple)
_errors = st.lists(
    st.builds(
        ErrorDetail,
        st.integers(0, 1 << 31),
        st.none() | st.lists(st.builds(ErrorContext, st.integers(1, 600), st.integers(1, 9), st.none() | st.integers(1, 99)), max_size=3).map(tuple),
        st.none() | st.integers(0, 1 << 20),
    ),
    min_size=1,
    max_size=4,
).map(tuple)
_stamps = st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2040, 1, 1)).map(
    lambda moment: moment.strftime("%Y%m%d%H%M%S")
)
_events = st.builds(_event, st.integers(1, 10**6), st.integers(0, 10**9), st.integers(0, 10**8))


@st.composite
def return_details(draw: Any) -> Any:
    kind = draw(st.sampled_from(["stop", "missing", "fatal", "severe"]))
    if kind == "stop":
        return StopReturn(draw(_seq), draw(_texts))
    if kind == "missing":
        start = draw(_seq)
        return MissingReturn(start, draw(st.none() | st.integers(start, 99999)), draw(_texts))
    if kind == "fatal":
        return FatalReturn(
            draw(_seq),
            transfer_batch_error=draw(_errors),
            audit_control_info_error=draw(st.none() | st.builds(GroupError, st.just({"totalCharge": 5}), _errors)),
            operator_spec=draw(_texts),
        )
    return SevereReturn(draw(_seq), draw(_events), draw(_errors), draw(_texts))


@st.composite
def rap_files(draw: Any) -> Any:
    creation = draw(_stamps)
    offset = draw(st.sampled_from(["+0430", "-0300", "+0000"]))
    if draw(st.booleans()):
        return Acknowledgement(
            "AFGAW", "AFGRA", draw(_seq), DateTimeLong(creation, offset), DateTimeLong(creation, offset),
            draw(st.booleans()), draw(_texts),
        )
    control = RapBatchControl(
        "AFGRA",
        "AFGAW",
        draw(_seq),
        DateTimeLong(creation, offset),
        DateTimeLong(creation, offset),
        test_data=draw(st.booleans()),
        roaming_partner=draw(st.none() | st.just("AFGAW")),
        operator_spec=draw(_texts),
        tap_decimal_places=draw(st.none() | st.integers(0, 6)),
        tap_currency=draw(st.none() | st.just("AFN")),
    )
    returns = tuple(draw(st.lists(return_details(), min_size=1, max_size=4)))
    return return_batch(control, returns, operator_spec=draw(_texts), with_tax_total=draw(st.booleans()))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rap_files())
def test_encode_then_decode_is_the_identity_and_the_reference_agrees(rap: Any):
    data = encode_rap(rap)
    assert decode_rap(data) == rap
    assert reference_rap().encode(reference_rap().decode(data)) == data
    assert reference_rap().decode(data) == to_asn1(rap)


def test_audit_totals_are_computed_from_the_returns():
    batch = return_batch(CONTROL, (SevereReturn(1, _event(1, 100, 10), (ErrorDetail(1),)), StopReturn(5)))
    assert batch.audit == RapAuditControl(1000, 2, None, 100)
