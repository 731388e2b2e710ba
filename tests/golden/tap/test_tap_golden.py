"""TAP 3.12 golden files: checked-in bytes, verified independently of the encoder.

For every case in tap_golden_cases.py:
* the checked-in `.ber` decodes with the FULL reference modules (spec/asn1) to exactly the
  value an independent oracle (below, written from the mapping in docs/codecs.md, sharing no
  code with the encoder) derives from the case's CDRs, and shows the case's literal values;
* re-encoding that decoded value with the reference modules gives the same bytes
  (definite, shortest lengths; canonical member order);
* the production encoders (fast and asn1tools-based, in memory and streaming) still produce
  exactly these bytes, and the production reader gets the records back.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from tap_golden_cases import CASES, TapCase, reference_spec

from cdr_mediation.codecs.tap import decode_tap_file, encode_tap_file, write_tap_file
from cdr_mediation.domain.cdr import Cdr, DlrStatus

UTC = dt.timezone.utc
ids = [case.name for case in CASES]


def test_there_are_at_least_25_golden_files():
    assert len(CASES) >= 25
    assert all(case.path.exists() for case in CASES)


# -- the oracle ------------------------------------------------------------------------------

STATUS_CODES = {
    DlrStatus.UNKNOWN: 0,
    DlrStatus.DELIVERED: 1,
    DlrStatus.UNDELIVERED: 2,
    DlrStatus.EXPIRED: 3,
    DlrStatus.REJECTED: 4,
}


def _zone(name: str) -> dt.tzinfo:
    match = re.fullmatch(r"([+-])(\d\d)(\d\d)", name)
    if not match:
        return zoneinfo.ZoneInfo(name)
    minutes = int(match.group(2)) * 60 + int(match.group(3))
    return dt.timezone(dt.timedelta(minutes=-minutes if match.group(1) == "-" else minutes))


def _offset(moment: dt.datetime) -> bytes:
    minutes = int(moment.utcoffset().total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}".encode()


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).replace(microsecond=0)


def _long(moment: dt.datetime, zone: dt.tzinfo) -> dict[str, bytes]:
    local = moment.replace(microsecond=0).astimezone(zone)
    return {"localTimeStamp": local.strftime("%Y%m%d%H%M%S").encode(), "utcTimeOffset": _offset(local)}


def _bcd(number: str) -> bytes:
    nibbles = [int(d) for d in number.lstrip("+")]
    if len(nibbles) % 2:
        nibbles.append(0xF)
    return bytes(nibbles[i] << 4 | nibbles[i + 1] for i in range(0, len(nibbles), 2))


def _tap_amount(minor: int, case: TapCase) -> int:
    value = Decimal(minor).scaleb(case.header.tap_decimal_places - case.header.currency_exponent)
    assert value == value.to_integral_value()
    return int(value)


def oracle(case: TapCase) -> tuple[str, dict[str, Any]]:
    """The DataInterChange value the mapping of docs/codecs.md prescribes for the case."""
    h = case.header
    zone = _zone(h.time_zone)
    control: dict[str, Any] = {
        "sender": h.sender.encode(),
        "recipient": h.recipient.encode(),
        "fileSequenceNumber": f"{h.file_sequence_number:05d}".encode(),
        "transferCutOffTimeStamp": _long(h.transfer_cut_off, zone),
        "fileAvailableTimeStamp": _long(h.file_available, zone),
        "specificationVersionNumber": 3,
        "releaseVersionNumber": 12,
    }
    if h.file_creation is not None:
        control["fileCreationTimeStamp"] = _long(h.file_creation, zone)
    if h.test_data:
        control["fileTypeIndicator"] = b"T"
    if h.rap_file_sequence_number is not None:
        control["rapFileSequenceNumber"] = f"{h.rap_file_sequence_number:05d}".encode()
    records: list[Cdr] = sorted(case.records, key=lambda r: r.chain_seq)
    if not records:
        return "notification", control

    codes = h.codes
    offsets: list[bytes] = []
    smscs: list[str] = []

    def local(text: str) -> dict[str, Any]:
        moment = _utc(text).astimezone(zone)
        offset = _offset(moment)
        if offset not in offsets:
            offsets.append(offset)
        return {"localTimeStamp": moment.strftime("%Y%m%d%H%M%S").encode(), "utcTimeOffsetCode": offsets.index(offset)}

    events = []
    for r in records:
        if r.smsc_id not in smscs:
            smscs.append(r.smsc_id)
        spec = [f"cdr_id={r.cdr_id}", f"chain_seq={r.chain_seq}", f"record_type={r.record_type.value}"]
        if r.ref_cdr_id is not None:
            spec.append(f"ref_cdr_id={r.ref_cdr_id}")
        if r.error_code is not None:
            spec.append(f"error_code={r.error_code}")
        charge = _tap_amount(r.amount_minor, case)
        deposit = local(r.submitted_at)
        completion = local(r.done_at)
        events.append(
            (
                "serviceCentreUsage",
                {
                    "basicInformation": {
                        "chargeableSubscriber": ("gsmChargeableSubscriber", {"msisdn": _bcd(r.msisdn)}),
                        "chargedPartyStatus": codes.charged_party_status,
                        "nonChargedNumber": r.sender_id.encode(),
                    },
                    "recEntityCode": smscs.index(r.smsc_id),
                    "chargeInformation": {
                        "chargedItem": b"E",
                        "exchangeRateCode": 1,
                        "chargeDetailList": [
                            {
                                "chargeType": b"00",
                                "charge": charge,
                                "chargeableUnits": r.segments,
                                "chargedUnits": r.segments if r.billable else 0,
                            }
                        ],
                        "taxInformation": [
                            {"taxCode": codes.tax_code, "taxValue": _tap_amount(r.tax_minor, case), "taxableAmount": charge}
                        ],
                    },
                    "scuChargeType": {
                        "messageStatus": STATUS_CODES[r.status],
                        "priorityCode": codes.priority_code,
                        "messageType": codes.message_type,
                        "messageDescriptionCode": codes.message_description_code,
                    },
                    "scuTimeStamps": {"depositTimeStamp": deposit, "completionTimeStamp": completion, "chargingPoint": b"C"},
                    "operatorSpecInformation": [item.encode() for item in spec],
                },
            )
        )
    taxation: dict[str, Any] = {"taxCode": codes.tax_code, "taxType": codes.tax_type.encode()}
    if codes.tax_rate is not None:
        taxation["taxRate"] = codes.tax_rate.encode()
    completions = [_utc(r.done_at) for r in records]
    return (
        "transferBatch",
        {
            "batchControlInfo": control,
            "accountingInfo": {
                "taxation": [taxation],
                "localCurrency": h.currency.encode(),
                "tapCurrency": h.currency.encode(),
                "currencyConversionInfo": [{"exchangeRateCode": 1, "numberOfDecimalPlaces": 0, "exchangeRate": 1}],
                "tapDecimalPlaces": h.tap_decimal_places,
            },
            "networkInfo": {
                "utcTimeOffsetInfo": [{"utcTimeOffsetCode": i, "utcTimeOffset": o} for i, o in enumerate(offsets)],
                "recEntityInfo": [
                    {"recEntityCode": i, "recEntityType": 2, "recEntityId": s.encode()} for i, s in enumerate(smscs)
                ],
            },
            "messageDescriptionInfo": [
                {"messageDescriptionCode": codes.message_description_code, "messageDescription": codes.message_description.encode()}
            ],
            "callEventDetails": events,
            "auditControlInfo": {
                "earliestCallTimeStamp": _long(min(completions), zone),
                "latestCallTimeStamp": _long(max(completions), zone),
                "totalCharge": sum(_tap_amount(r.amount_minor, case) for r in records),
                "totalTaxValue": sum(_tap_amount(r.tax_minor, case) for r in records),
                "totalDiscountValue": 0,
                "callEventDetailsCount": len(records),
            },
        },
    )


def _at(value: Any, path: str) -> Any:
    """Follow "a.b[0].c": member names, list indexes, and CHOICE alternatives by name."""
    for name, index in re.findall(r"([A-Za-z]+)(?:\[(\d+)\])?", path):
        if isinstance(value, tuple):  # a CHOICE value: (alternative, value)
            assert value[0] == name, (value[0], name)
            value = value[1]
        else:
            value = value[name]
        if index:
            value = value[int(index)]
    return value


def _literal(decoded: tuple[str, dict[str, Any]], path: str) -> Any:
    kind, body = decoded
    if path == "@kind":
        return kind
    return _at(body, path)


# -- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_reference_decode_is_the_oracle_value_and_the_literal_values(case: TapCase):
    decoded = reference_spec().modules["TAP-0312"]["DataInterChange"].decode(case.path.read_bytes())
    assert decoded == oracle(case)
    for path, expected in case.expect.items():
        assert _literal(decoded, path) == expected, path


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_reference_reencodes_to_the_same_bytes(case: TapCase):
    data = case.path.read_bytes()
    compiled = reference_spec().modules["TAP-0312"]["DataInterChange"]
    assert compiled.encode(compiled.decode(data)) == data


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_encoders_still_produce_the_golden_bytes(case: TapCase, tmp_path: Path):
    data = case.path.read_bytes()
    assert encode_tap_file(case.header, case.records) == data
    assert encode_tap_file(case.header, case.records, record_encoder="reference") == data
    summary = write_tap_file(tmp_path / "out.tap", case.header, case.records, fsync=False)
    assert (tmp_path / "out.tap").read_bytes() == data
    assert summary.size == len(data) and summary.record_count == len(case.records)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_reader_gets_the_records_back_and_totals_reconcile(case: TapCase):
    view = decode_tap_file(case.path.read_bytes())
    assert view.reconciliation_errors() == []
    assert [r.cdr_id for r in view.records] == [r.cdr_id for r in case.records]
    for read, original in zip(view.records, case.records):
        assert (read.chain_seq, read.record_type, read.ref_cdr_id, read.error_code) == (
            original.chain_seq,
            original.record_type,
            original.ref_cdr_id,
            original.error_code,
        )
        assert (read.msisdn, read.sender_id, read.smsc_id, read.segments) == (
            original.msisdn,
            original.sender_id,
            original.smsc_id,
            original.segments,
        )
        assert read.done_at == _utc(original.done_at).replace(tzinfo=UTC)
        assert read.submitted_at == _utc(original.submitted_at).replace(tzinfo=UTC)
