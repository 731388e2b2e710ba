"""The TAP 3.12 golden cases: inputs (a file header and CDRs) and literal expectations.

`make_golden.py` writes `<name>.ber` for each case with the production encoder;
`test_tap_golden.py` decodes those bytes with the full reference modules and checks them
against an independent oracle and against the literal values given here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import os
from pathlib import Path
from typing import Any

import asn1tools

from cdr_mediation.codecs.header import FileHeader, TapCodes
from cdr_mediation.domain.cdr import Cdr, DlrStatus, RecordType

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[2]
UTC = dt.timezone.utc


@functools.cache
def reference_spec() -> Any:
    """The full TAP-0312 + RAP-0105 reference modules (not the package's subset)."""
    shared = Path(os.environ.get("CDR_SHARED_DIR", REPO_ROOT.parent / "shared"))
    asn1_dir = shared / "spec" / "asn1"
    return asn1tools.compile_files([str(asn1_dir / "TAP-0312.asn"), str(asn1_dir / "RAP-0105.asn")], "ber")


@dataclasses.dataclass(frozen=True)
class TapCase:
    name: str
    what: str
    header: FileHeader
    records: tuple[Cdr, ...]
    # Literal values at paths of the decoded DataInterChange value ("a.b[0].c").
    expect: dict[str, Any]

    @property
    def path(self) -> Path:
        return HERE / f"{self.name}.ber"


def header(**overrides: Any) -> FileHeader:
    values: dict[str, Any] = dict(
        operator_id="op-a",
        sender="AFGAW",
        recipient="AFGRA",
        file_sequence_number=42,
        transfer_cut_off=dt.datetime(2026, 3, 2, 0, 0, tzinfo=UTC),
        file_available=dt.datetime(2026, 3, 2, 1, 0, tzinfo=UTC),
        time_zone="+0430",
        currency="AFN",
        currency_exponent=2,
        tap_decimal_places=3,
    )
    values.update(overrides)
    return FileHeader(**values)


def cdr(seq: int, **overrides: Any) -> Cdr:
    values: dict[str, Any] = dict(
        record_type=RecordType.CDR,
        cdr_id=f"5b7c1d9e-0000-5000-8000-{seq:012d}",
        dlr_id=f"dlr-{seq}",
        message_id=f"msg-{seq}",
        tenant_id="tenant-1",
        operator_id="op-a",
        sender_id="ACME",
        msisdn="+93701234567",
        status=DlrStatus.DELIVERED,
        submitted_at="2026-03-01T10:00:00.123Z",
        done_at="2026-03-01T10:00:05.999Z",
        segments=1,
        billable=True,
        unit_price_minor=150,
        amount_minor=150,
        tax_minor=15,
        currency="AFN",
        pricing_version="pv-1",
        error_code=None,
        smsc_id="smsc-kbl-1",
        chain_seq=seq,
        prev_hash="0" * 64,
    )
    values.update(overrides)
    return Cdr(**values)


SCU = "callEventDetails[{}].serviceCentreUsage"


def scu(index: int, rest: str) -> str:
    return f"{SCU.format(index)}.{rest}"


BERLIN_DST = "2026-03-29T01:00:00.000Z"  # 02:00 CET -> 03:00 CEST

CASES: list[TapCase] = [
    TapCase(
        "single_delivered",
        "one delivered SMS; +0430 local time; amounts x10 (exponent 2 -> 3 TAP decimals)",
        header(),
        (cdr(1),),
        {
            "batchControlInfo.sender": b"AFGAW",
            "batchControlInfo.recipient": b"AFGRA",
            "batchControlInfo.fileSequenceNumber": b"00042",
            "batchControlInfo.specificationVersionNumber": 3,
            "batchControlInfo.releaseVersionNumber": 12,
            "batchControlInfo.transferCutOffTimeStamp": {"localTimeStamp": b"20260302043000", "utcTimeOffset": b"+0430"},
            "batchControlInfo.fileAvailableTimeStamp": {"localTimeStamp": b"20260302053000", "utcTimeOffset": b"+0430"},
            "accountingInfo.localCurrency": b"AFN",
            "accountingInfo.tapCurrency": b"AFN",
            "accountingInfo.tapDecimalPlaces": 3,
            "networkInfo.utcTimeOffsetInfo": [{"utcTimeOffsetCode": 0, "utcTimeOffset": b"+0430"}],
            "networkInfo.recEntityInfo": [{"recEntityCode": 0, "recEntityType": 2, "recEntityId": b"smsc-kbl-1"}],
            scu(0, "basicInformation.chargeableSubscriber"): ("gsmChargeableSubscriber", {"msisdn": bytes.fromhex("93701234567f")}),
            scu(0, "basicInformation.nonChargedNumber"): b"ACME",
            scu(0, "scuTimeStamps.depositTimeStamp"): {"localTimeStamp": b"20260301143000", "utcTimeOffsetCode": 0},
            scu(0, "scuTimeStamps.completionTimeStamp"): {"localTimeStamp": b"20260301143005", "utcTimeOffsetCode": 0},
            scu(0, "chargeInformation.chargeDetailList[0].charge"): 1500,
            scu(0, "chargeInformation.taxInformation[0].taxValue"): 150,
            scu(0, "operatorSpecInformation"): [
                b"cdr_id=5b7c1d9e-0000-5000-8000-000000000001",
                b"chain_seq=1",
                b"record_type=CDR",
            ],
            "auditControlInfo.totalCharge": 1500,
            "auditControlInfo.totalTaxValue": 150,
            "auditControlInfo.totalDiscountValue": 0,
            "auditControlInfo.callEventDetailsCount": 1,
            "auditControlInfo.earliestCallTimeStamp": {"localTimeStamp": b"20260301143005", "utcTimeOffset": b"+0430"},
        },
    ),
    TapCase(
        "notification_empty",
        "a file without events is a Notification",
        header(),
        (),
        {"@kind": "notification", "fileSequenceNumber": b"00042", "releaseVersionNumber": 12},
    ),
    TapCase(
        "notification_test_resubmission",
        "Notification with creation time, RAP file sequence number and the test-data indicator",
        header(
            file_creation=dt.datetime(2026, 3, 2, 0, 30, tzinfo=UTC),
            rap_file_sequence_number=7,
            test_data=True,
        ),
        (),
        {
            "@kind": "notification",
            "rapFileSequenceNumber": b"00007",
            "fileTypeIndicator": b"T",
            "fileCreationTimeStamp": {"localTimeStamp": b"20260302050000", "utcTimeOffset": b"+0430"},
        },
    ),
    TapCase(
        "smsc_codes_first_met",
        "recording entity codes are handed out in the order SMSCs first appear",
        header(),
        (cdr(1, smsc_id="smsc-b"), cdr(2, smsc_id="smsc-a"), cdr(3, smsc_id="smsc-b")),
        {
            "networkInfo.recEntityInfo": [
                {"recEntityCode": 0, "recEntityType": 2, "recEntityId": b"smsc-b"},
                {"recEntityCode": 1, "recEntityType": 2, "recEntityId": b"smsc-a"},
            ],
            scu(1, "recEntityCode"): 1,
            scu(2, "recEntityCode"): 0,
        },
    ),
    TapCase(
        "void_adjustment",
        "a CDR and the VOID that cancels it: zero amounts, reference in operatorSpecInformation",
        header(),
        (
            cdr(1),
            cdr(2, record_type=RecordType.VOID, ref_cdr_id="5b7c1d9e-0000-5000-8000-000000000001", amount_minor=0, tax_minor=0, actor="ops@example", ticket_ref="T-1"),
        ),
        {
            scu(1, "operatorSpecInformation"): [
                b"cdr_id=5b7c1d9e-0000-5000-8000-000000000002",
                b"chain_seq=2",
                b"record_type=VOID",
                b"ref_cdr_id=5b7c1d9e-0000-5000-8000-000000000001",
            ],
            scu(1, "chargeInformation.chargeDetailList[0].charge"): 0,
            "auditControlInfo.totalCharge": 1500,
        },
    ),
    TapCase(
        "correct_adjustment",
        "a CDR and the CORRECT that replaces it with a new amount",
        header(),
        (cdr(1), cdr(2, record_type=RecordType.CORRECT, ref_cdr_id="5b7c1d9e-0000-5000-8000-000000000001", amount_minor=120, tax_minor=12)),
        {
            scu(1, "chargeInformation.chargeDetailList[0].charge"): 1200,
            scu(1, "operatorSpecInformation[2]"): b"record_type=CORRECT",
            "auditControlInfo.totalCharge": 2700,
            "auditControlInfo.totalTaxValue": 270,
        },
    ),
    TapCase(
        "void_of_earlier_file",
        "a file holding only a VOID of a CDR exported in an earlier file",
        header(),
        (cdr(900, record_type=RecordType.VOID, ref_cdr_id="5b7c1d9e-0000-5000-8000-000000000017", amount_minor=0, tax_minor=0),),
        {"auditControlInfo.totalCharge": 0, scu(0, "operatorSpecInformation[3]"): b"ref_cdr_id=5b7c1d9e-0000-5000-8000-000000000017"},
    ),
    TapCase(
        "msisdn_even_digits",
        "12 digits: BCD without filler",
        header(),
        (cdr(1, msisdn="+491511234567"),),
        {scu(0, "basicInformation.chargeableSubscriber"): ("gsmChargeableSubscriber", {"msisdn": bytes.fromhex("491511234567")})},
    ),
    TapCase(
        "msisdn_fifteen_digits",
        "the longest E.164 number: 15 digits, 8 octets with one 'f' filler",
        header(),
        (cdr(1, msisdn="+123456789012345"),),
        {scu(0, "basicInformation.chargeableSubscriber"): ("gsmChargeableSubscriber", {"msisdn": bytes.fromhex("123456789012345f")})},
    ),
    TapCase(
        "msisdn_one_digit",
        "the shortest number: one digit and the filler",
        header(),
        (cdr(1, msisdn="+7"),),
        {scu(0, "basicInformation.chargeableSubscriber"): ("gsmChargeableSubscriber", {"msisdn": b"\x7f"})},
    ),
    TapCase(
        "sender_alphanumeric",
        "an alphanumeric sender with an inner space is written as is",
        header(),
        (cdr(1, sender_id="ACME Bank"),),
        {scu(0, "basicInformation.nonChargedNumber"): b"ACME Bank"},
    ),
    TapCase(
        "sender_numeric_short_code",
        "a numeric short code sender",
        header(),
        (cdr(1, sender_id="700123"),),
        {scu(0, "basicInformation.nonChargedNumber"): b"700123"},
    ),
    TapCase(
        "currency_without_minor_units",
        "exponent 0, tapDecimalPlaces 0: amounts unscaled",
        header(currency="JPY", currency_exponent=0, tap_decimal_places=0),
        (cdr(1, currency="JPY", amount_minor=3, tax_minor=1),),
        {scu(0, "chargeInformation.chargeDetailList[0].charge"): 3, "accountingInfo.tapDecimalPlaces": 0},
    ),
    TapCase(
        "five_tap_decimals",
        "exponent 2, tapDecimalPlaces 5: amounts x1000",
        header(tap_decimal_places=5),
        (cdr(1, amount_minor=1234, tax_minor=5),),
        {
            scu(0, "chargeInformation.chargeDetailList[0].charge"): 1234000,
            scu(0, "chargeInformation.taxInformation[0].taxValue"): 5000,
            scu(0, "chargeInformation.taxInformation[0].taxableAmount"): 1234000,
        },
    ),
    TapCase(
        "fewer_tap_decimals_exact",
        "exponent 3 (KWD), tapDecimalPlaces 2: exact division only",
        header(currency="KWD", currency_exponent=3, tap_decimal_places=2),
        (cdr(1, currency="KWD", amount_minor=1230, tax_minor=50),),
        {scu(0, "chargeInformation.chargeDetailList[0].charge"): 123, scu(0, "chargeInformation.taxInformation[0].taxValue"): 5},
    ),
    TapCase(
        "undelivered_not_billable",
        "undelivered, not billable: zero charge, zero charged units, error code kept",
        header(),
        (cdr(1, status=DlrStatus.UNDELIVERED, billable=False, amount_minor=0, tax_minor=0, error_code="E042", segments=2),),
        {
            scu(0, "chargeInformation.chargeDetailList[0].chargeableUnits"): 2,
            scu(0, "chargeInformation.chargeDetailList[0].chargedUnits"): 0,
            scu(0, "scuChargeType.messageStatus"): 2,
            scu(0, "operatorSpecInformation[3]"): b"error_code=E042",
        },
    ),
    TapCase(
        "integer_length_edges",
        "amounts whose INTEGER encodings need a leading zero octet (127, 128, 255, 256, 32767, 32768)",
        header(tap_decimal_places=2),
        tuple(cdr(i + 1, amount_minor=v, tax_minor=v) for i, v in enumerate([127, 128, 255, 256, 32767, 32768])),
        {
            scu(1, "chargeInformation.chargeDetailList[0].charge"): 128,
            scu(5, "chargeInformation.chargeDetailList[0].charge"): 32768,
            "auditControlInfo.totalCharge": 127 + 128 + 255 + 256 + 32767 + 32768,
        },
    ),
    TapCase(
        "large_amount_eight_octets",
        "an amount that needs all 8 octets of a 64-bit INTEGER",
        header(tap_decimal_places=2),
        (cdr(1, amount_minor=(1 << 62) + 12345, tax_minor=0),),
        {scu(0, "chargeInformation.chargeDetailList[0].charge"): (1 << 62) + 12345},
    ),
    TapCase(
        "dst_change_berlin",
        "Europe/Berlin across the spring change: two UTC offsets, codes in first-met order",
        header(
            time_zone="Europe/Berlin",
            transfer_cut_off=dt.datetime(2026, 3, 30, tzinfo=UTC),
            file_available=dt.datetime(2026, 3, 30, 1, tzinfo=UTC),
        ),
        (
            cdr(1, submitted_at="2026-03-29T00:59:58.000Z", done_at="2026-03-29T00:59:59.999Z"),
            cdr(2, submitted_at="2026-03-29T00:59:59.000Z", done_at=BERLIN_DST),
        ),
        {
            "networkInfo.utcTimeOffsetInfo": [
                {"utcTimeOffsetCode": 0, "utcTimeOffset": b"+0100"},
                {"utcTimeOffsetCode": 1, "utcTimeOffset": b"+0200"},
            ],
            scu(0, "scuTimeStamps.completionTimeStamp"): {"localTimeStamp": b"20260329015959", "utcTimeOffsetCode": 0},
            scu(1, "scuTimeStamps.depositTimeStamp"): {"localTimeStamp": b"20260329015959", "utcTimeOffsetCode": 0},
            scu(1, "scuTimeStamps.completionTimeStamp"): {"localTimeStamp": b"20260329030000", "utcTimeOffsetCode": 1},
            "batchControlInfo.transferCutOffTimeStamp": {"localTimeStamp": b"20260330020000", "utcTimeOffset": b"+0200"},
        },
    ),
    TapCase(
        "negative_offset_previous_day",
        "-0330: local time falls on the previous calendar day",
        header(time_zone="-0330"),
        (cdr(1, submitted_at="2026-03-01T01:00:00.000Z", done_at="2026-03-01T01:15:30.000Z"),),
        {
            scu(0, "scuTimeStamps.completionTimeStamp.localTimeStamp"): b"20260228214530",
            "networkInfo.utcTimeOffsetInfo": [{"utcTimeOffsetCode": 0, "utcTimeOffset": b"-0330"}],
        },
    ),
    TapCase(
        "offset_across_midnight",
        "+0430: local time falls on the next calendar day; milliseconds truncated, not rounded",
        header(),
        (cdr(1, submitted_at="2026-03-01T19:45:09.999Z", done_at="2026-03-01T19:45:10.500Z"),),
        {
            scu(0, "scuTimeStamps.depositTimeStamp.localTimeStamp"): b"20260302001509",
            scu(0, "scuTimeStamps.completionTimeStamp.localTimeStamp"): b"20260302001510",
        },
    ),
    TapCase(
        "all_statuses",
        "each delivery status and its messageStatus code",
        header(),
        tuple(cdr(i + 1, status=s, billable=s is DlrStatus.DELIVERED) for i, s in enumerate(DlrStatus)),
        {scu(i, "scuChargeType.messageStatus"): code for i, code in enumerate([1, 2, 3, 4, 0])},
    ),
    TapCase(
        "segments_multi_and_max",
        "3-part and 255-part messages",
        header(),
        (cdr(1, segments=3, amount_minor=450, tax_minor=45), cdr(2, segments=255, amount_minor=38250, tax_minor=3825)),
        {
            scu(0, "chargeInformation.chargeDetailList[0].chargeableUnits"): 3,
            scu(1, "chargeInformation.chargeDetailList[0].chargedUnits"): 255,
        },
    ),
    TapCase(
        "rejected_with_error_code",
        "a rejected message: error code after the identifiers",
        header(),
        (cdr(1, status=DlrStatus.REJECTED, billable=False, amount_minor=0, tax_minor=0, error_code="SMSC:0x45"),),
        {scu(0, "operatorSpecInformation[3]"): b"error_code=SMSC:0x45", scu(0, "scuChargeType.messageStatus"): 4},
    ),
    TapCase(
        "test_file_max_sequence",
        "file sequence number 99999, test data, creation timestamp",
        header(file_sequence_number=99999, test_data=True, file_creation=dt.datetime(2026, 3, 2, 0, 5, tzinfo=UTC)),
        (cdr(1),),
        {
            "batchControlInfo.fileSequenceNumber": b"99999",
            "batchControlInfo.fileTypeIndicator": b"T",
            "batchControlInfo.fileCreationTimeStamp": {"localTimeStamp": b"20260302043500", "utcTimeOffset": b"+0430"},
        },
    ),
    TapCase(
        "rap_resubmission",
        "a corrected file resubmitted after RAP file 00003",
        header(rap_file_sequence_number=3),
        (cdr(1),),
        {"batchControlInfo.rapFileSequenceNumber": b"00003"},
    ),
    TapCase(
        "custom_tap_codes",
        "an operator agreement with its own codes (tax rate, message type, description)",
        header(
            codes=TapCodes(
                message_type=7,
                message_description_code=3,
                message_description="Bulk A2P",
                tax_code=2,
                tax_type="14",
                tax_rate="1000000",
                priority_code=1,
            )
        ),
        (cdr(1),),
        {
            "accountingInfo.taxation": [{"taxCode": 2, "taxType": b"14", "taxRate": b"1000000"}],
            "messageDescriptionInfo": [{"messageDescriptionCode": 3, "messageDescription": b"Bulk A2P"}],
            scu(0, "scuChargeType"): {"messageStatus": 1, "priorityCode": 1, "messageType": 7, "messageDescriptionCode": 3},
            scu(0, "chargeInformation.taxInformation[0].taxCode"): 2,
        },
    ),
    TapCase(
        "many_smscs_long_lengths",
        "300 records on 300 SMSCs: 3-octet lengths and recEntityCode above 255",
        header(),
        tuple(cdr(i + 1, smsc_id=f"smsc-{i:03d}") for i in range(300)),
        {scu(299, "recEntityCode"): 299, "auditControlInfo.callEventDetailsCount": 300},
    ),
    TapCase(
        "count_128",
        "128 records: callEventDetailsCount needs a leading zero octet",
        header(),
        tuple(cdr(i + 1) for i in range(128)),
        {"auditControlInfo.callEventDetailsCount": 128, "auditControlInfo.totalCharge": 128 * 1500},
    ),
    TapCase(
        "same_second_chain_order",
        "records completing in the same millisecond stay in chain order",
        header(),
        (cdr(5, cdr_id="b"), cdr(9, cdr_id="a"), cdr(11, cdr_id="c")),
        {scu(0, "operatorSpecInformation[0]"): b"cdr_id=b", scu(1, "operatorSpecInformation[1]"): b"chain_seq=9"},
    ),
    TapCase(
        "lord_howe_half_hour_dst",
        "Australia/Lord_Howe: +1100 in summer, +1030 in winter (30-minute change)",
        header(
            time_zone="Australia/Lord_Howe",
            transfer_cut_off=dt.datetime(2026, 4, 6, tzinfo=UTC),
            file_available=dt.datetime(2026, 4, 6, 1, tzinfo=UTC),
        ),
        (
            cdr(1, submitted_at="2026-04-04T14:59:00.000Z", done_at="2026-04-04T14:59:59.000Z"),
            cdr(2, submitted_at="2026-04-04T15:00:00.000Z", done_at="2026-04-04T15:00:00.000Z"),
        ),
        {
            "networkInfo.utcTimeOffsetInfo": [
                {"utcTimeOffsetCode": 0, "utcTimeOffset": b"+1100"},
                {"utcTimeOffsetCode": 1, "utcTimeOffset": b"+1030"},
            ],
            scu(1, "scuTimeStamps.completionTimeStamp"): {"localTimeStamp": b"20260405013000", "utcTimeOffsetCode": 1},
        },
    ),
    TapCase(
        "long_identifier",
        "a 140-character cdr_id: operatorSpecInformation needs long-form lengths",
        header(),
        (cdr(1, cdr_id="x" * 140),),
        {scu(0, "operatorSpecInformation[0]"): b"cdr_id=" + b"x" * 140},
    ),
    TapCase(
        "long_sender",
        "a 130-character sender: basicInformation needs a long-form length",
        header(),
        (cdr(1, sender_id="S" * 130),),
        {scu(0, "basicInformation.nonChargedNumber"): b"S" * 130},
    ),
    TapCase(
        "utc_zone",
        "+0000 and a cut-off exactly at the last record's completion",
        header(time_zone="+0000", transfer_cut_off=dt.datetime(2026, 3, 1, 10, 0, 5, 999000, tzinfo=UTC)),
        (cdr(1),),
        {
            "batchControlInfo.transferCutOffTimeStamp": {"localTimeStamp": b"20260301100005", "utcTimeOffset": b"+0000"},
            scu(0, "scuTimeStamps.completionTimeStamp.localTimeStamp"): b"20260301100005",
        },
    ),
]

CASES_BY_NAME = {case.name: case for case in CASES}
assert len(CASES_BY_NAME) == len(CASES), "case names must be unique"
