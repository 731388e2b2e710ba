"""The RAP 1.05 golden cases: RAP files as model values, with literal expectations.

`make_golden.py` writes `<name>.ber` for each case with the production encoder;
`test_rap_golden.py` decodes them with the full reference modules and checks them.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any

import asn1tools

from cdr_mediation.codecs.rap import (
    Acknowledgement,
    DateTimeLong,
    ErrorContext,
    ErrorDetail,
    FatalReturn,
    GroupError,
    MissingReturn,
    RapBatchControl,
    RapFile,
    SevereReturn,
    StopReturn,
    return_batch,
)

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[2]


@functools.cache
def reference_spec() -> Any:
    """The full TAP-0312 + RAP-0105 reference modules (not the package's subset)."""
    shared = Path(os.environ.get("CDR_SHARED_DIR", REPO_ROOT.parent / "shared"))
    asn1_dir = shared / "spec" / "asn1"
    return asn1tools.compile_files([str(asn1_dir / "TAP-0312.asn"), str(asn1_dir / "RAP-0105.asn")], "ber")


@dataclasses.dataclass(frozen=True)
class RapCase:
    name: str
    what: str
    rap: RapFile
    expect: dict[str, Any]  # literal values at paths of the decoded RapDataInterChange value

    @property
    def path(self) -> Path:
        return HERE / f"{self.name}.ber"


CREATED = DateTimeLong("20260303090000", "+0430")
AVAILABLE = DateTimeLong("20260303091500", "+0430")


def control(**overrides: Any) -> RapBatchControl:
    # The regulator (sender) returns records to the operator (recipient).
    values: dict[str, Any] = dict(
        sender="AFGRA", recipient="AFGAW", rap_file_sequence_number=12, creation=CREATED, available=AVAILABLE
    )
    values.update(overrides)
    return RapBatchControl(**values)


def ack(**overrides: Any) -> Acknowledgement:
    values: dict[str, Any] = dict(
        sender="AFGAW", recipient="AFGRA", rap_file_sequence_number=12, creation=CREATED, available=AVAILABLE
    )
    values.update(overrides)
    return Acknowledgement(**values)


def scu_event(seq: int, charge: int = 1500, tax: int = 150, record_type: str = "CDR") -> tuple[str, dict[str, Any]]:
    """A ServiceCentreUsage record as the operator sent it (asn1tools form, written out)."""
    return (
        "serviceCentreUsage",
        {
            "basicInformation": {
                "chargeableSubscriber": ("gsmChargeableSubscriber", {"msisdn": bytes.fromhex("93701234567f")}),
                "chargedPartyStatus": 1,
                "nonChargedNumber": b"ACME",
            },
            "recEntityCode": 0,
            "chargeInformation": {
                "chargedItem": b"E",
                "exchangeRateCode": 1,
                "chargeDetailList": [{"chargeType": b"00", "charge": charge, "chargeableUnits": 1, "chargedUnits": 1}],
                "taxInformation": [{"taxCode": 1, "taxValue": tax, "taxableAmount": charge}],
            },
            "scuChargeType": {"messageStatus": 1, "priorityCode": 0, "messageType": 1, "messageDescriptionCode": 1},
            "scuTimeStamps": {
                "depositTimeStamp": {"localTimeStamp": b"20260301143000", "utcTimeOffsetCode": 0},
                "completionTimeStamp": {"localTimeStamp": b"20260301143005", "utcTimeOffsetCode": 0},
                "chargingPoint": b"C",
            },
            "operatorSpecInformation": [
                f"cdr_id=5b7c1d9e-0000-5000-8000-{seq:012d}".encode(),
                f"chain_seq={seq}".encode(),
                f"record_type={record_type}".encode(),
            ],
        },
    )


BATCH_CONTROL = {
    "sender": b"AFGAW",
    "recipient": b"AFGRA",
    "fileSequenceNumber": b"00042",
    "transferCutOffTimeStamp": {"localTimeStamp": b"20260302043000", "utcTimeOffset": b"+0430"},
    "fileAvailableTimeStamp": {"localTimeStamp": b"20260302053000", "utcTimeOffset": b"+0430"},
    "specificationVersionNumber": 3,
    "releaseVersionNumber": 12,
}
ACCOUNTING = {
    "taxation": [{"taxCode": 1, "taxType": b"01"}],
    "localCurrency": b"AFN",
    "tapCurrency": b"AFN",
    "currencyConversionInfo": [{"exchangeRateCode": 1, "numberOfDecimalPlaces": 0, "exchangeRate": 1}],
    "tapDecimalPlaces": 3,
}
NETWORK = {
    "utcTimeOffsetInfo": [{"utcTimeOffsetCode": 0, "utcTimeOffset": b"+0430"}],
    "recEntityInfo": [{"recEntityCode": 0, "recEntityType": 2, "recEntityId": b"smsc-kbl-1"}],
}
AUDIT = {
    "earliestCallTimeStamp": {"localTimeStamp": b"20260301143005", "utcTimeOffset": b"+0430"},
    "latestCallTimeStamp": {"localTimeStamp": b"20260301143005", "utcTimeOffset": b"+0430"},
    "totalCharge": 1500,
    "totalTaxValue": 150,
    "totalDiscountValue": 0,
    "callEventDetailsCount": 1,
}
NOTIFICATION = {
    "sender": b"AFGAW",
    "recipient": b"AFGRA",
    "fileSequenceNumber": b"00043",
    "fileAvailableTimeStamp": {"localTimeStamp": b"20260303053000", "utcTimeOffset": b"+0430"},
    "transferCutOffTimeStamp": {"localTimeStamp": b"20260303043000", "utcTimeOffset": b"+0430"},
    "specificationVersionNumber": 3,
    "releaseVersionNumber": 12,
}

E = ErrorDetail
RB = "returnDetails[{}]"


def rd(index: int, rest: str) -> str:
    return f"{RB.format(index)}.{rest}"


CASES: list[RapCase] = [
    RapCase("ack_minimal", "acknowledgement of RAP file 00012", ack(), {"@kind": "acknowledgement", "rapFileSequenceNumber": b"00012"}),
    RapCase("ack_test_data", "acknowledgement of a test RAP file", ack(test_data=True), {"fileTypeIndicator": b"T"}),
    RapCase(
        "ack_operator_spec",
        "acknowledgement with operator-specific items",
        ack(operator_spec=("ticket=OPS-7", "batch=daily")),
        {"operatorSpecList": [b"ticket=OPS-7", b"batch=daily"]},
    ),
    RapCase(
        "ack_negative_offset",
        "acknowledgement stamped in a negative UTC offset",
        ack(creation=DateTimeLong("20260302230000", "-0300"), available=DateTimeLong("20260302230500", "-0300")),
        {"ackFileCreationTimeStamp": {"localTimeStamp": b"20260302230000", "utcTimeOffset": b"-0300"}},
    ),
    RapCase(
        "severe_single",
        "one record returned with one error",
        return_batch(control(), (SevereReturn(42, scu_event(1), (E(34),)),)),
        {
            "@kind": "returnBatch",
            rd(0, "severeReturn.fileSequenceNumber"): b"00042",
            rd(0, "severeReturn.errorDetail"): [{"errorCode": 34}],
            "rapAuditControlInfo": {"totalSevereReturnValue": 1500, "returnDetailsCount": 1, "totalSevereReturnTax": 150},
        },
    ),
    RapCase(
        "severe_error_context",
        "an error located by a two-level error context",
        return_batch(control(), (SevereReturn(42, scu_event(1), (E(202, (ErrorContext(12, 1), ErrorContext(193, 2, 1))),)),)),
        {
            rd(0, "severeReturn.errorDetail[0].errorContext"): [
                {"pathItemId": 12, "itemLevel": 1},
                {"pathItemId": 193, "itemOccurrence": 1, "itemLevel": 2},
            ]
        },
    ),
    RapCase(
        "severe_item_offset",
        "an error with an item offset",
        return_batch(control(), (SevereReturn(42, scu_event(1), (E(31, item_offset=118),)),)),
        {rd(0, "severeReturn.errorDetail[0].itemOffset"): 118},
    ),
    RapCase(
        "severe_multiple_errors",
        "one record with three errors",
        return_batch(control(), (SevereReturn(42, scu_event(1), (E(30), E(33), E(36))),)),
        {rd(0, "severeReturn.errorDetail"): [{"errorCode": 30}, {"errorCode": 33}, {"errorCode": 36}]},
    ),
    RapCase(
        "severe_two_records_totals",
        "two records returned: audit totals are their sums",
        return_batch(
            control(),
            (SevereReturn(42, scu_event(1, 1500, 150), (E(34),)), SevereReturn(42, scu_event(2, 4500, 450), (E(34),))),
        ),
        {"rapAuditControlInfo": {"totalSevereReturnValue": 6000, "returnDetailsCount": 2, "totalSevereReturnTax": 600}},
    ),
    RapCase(
        "severe_void_record",
        "a returned VOID adjustment (zero charge)",
        return_batch(control(), (SevereReturn(42, scu_event(3, 0, 0, "VOID"), (E(34),)),)),
        {"rapAuditControlInfo.totalSevereReturnValue": 0, rd(0, "severeReturn.callEventDetail.serviceCentreUsage.operatorSpecInformation[2]"): b"record_type=VOID"},
    ),
    RapCase(
        "severe_without_tax_total",
        "audit without the optional tax total",
        return_batch(control(), (SevereReturn(42, scu_event(1), (E(34),)),), with_tax_total=False),
        {"rapAuditControlInfo": {"totalSevereReturnValue": 1500, "returnDetailsCount": 1}},
    ),
    RapCase(
        "severe_operator_spec",
        "a severe return with operator-specific items",
        return_batch(control(), (SevereReturn(42, scu_event(1), (E(34),), ("dispute=D-19",)),)),
        {rd(0, "severeReturn.operatorSpecList"): [b"dispute=D-19"]},
    ),
    RapCase(
        "fatal_transfer_batch",
        "a whole file rejected at TransferBatch level",
        return_batch(control(), (FatalReturn(42, transfer_batch_error=(E(35),)),)),
        {rd(0, "fatalReturn.transferBatchError"): {"errorDetail": [{"errorCode": 35}]}},
    ),
    RapCase(
        "fatal_batch_control",
        "a file rejected for its BatchControlInfo, echoed back",
        return_batch(control(), (FatalReturn(42, batch_control_error=GroupError(BATCH_CONTROL, (E(10),))),)),
        {rd(0, "fatalReturn.batchControlError.batchControlInfo.fileSequenceNumber"): b"00042"},
    ),
    RapCase(
        "fatal_accounting_info",
        "a file rejected for its AccountingInfo",
        return_batch(control(), (FatalReturn(42, accounting_info_error=GroupError(ACCOUNTING, (E(11),))),)),
        {rd(0, "fatalReturn.accountingInfoError.accountingInfo.tapDecimalPlaces"): 3},
    ),
    RapCase(
        "fatal_network_info",
        "a file rejected for its NetworkInfo",
        return_batch(control(), (FatalReturn(42, network_info_error=GroupError(NETWORK, (E(12),))),)),
        {rd(0, "fatalReturn.networkInfoError.networkInfo.recEntityInfo[0].recEntityId"): b"smsc-kbl-1"},
    ),
    RapCase(
        "fatal_audit_control",
        "a file rejected for its AuditControlInfo",
        return_batch(control(), (FatalReturn(42, audit_control_info_error=GroupError(AUDIT, (E(13),))),)),
        {rd(0, "fatalReturn.auditControlInfoError.auditControlInfo.totalCharge"): 1500},
    ),
    RapCase(
        "fatal_notification",
        "a Notification rejected",
        return_batch(control(), (FatalReturn(43, notification_error=GroupError(NOTIFICATION, (E(14),))),)),
        {rd(0, "fatalReturn.notificationError.notification.fileSequenceNumber"): b"00043"},
    ),
    RapCase(
        "fatal_message_description",
        "a file rejected for its MessageDescriptionInfo",
        return_batch(
            control(),
            (
                FatalReturn(
                    42,
                    message_description_error=GroupError(
                        [{"messageDescriptionCode": 1, "messageDescription": b"A2P SMS"}], (E(15),)
                    ),
                ),
            ),
        ),
        {rd(0, "fatalReturn.messageDescriptionError.messageDescriptionInfo[0].messageDescription"): b"A2P SMS"},
    ),
    RapCase(
        "fatal_two_groups",
        "a file rejected for two groups at once",
        return_batch(
            control(),
            (
                FatalReturn(
                    42,
                    batch_control_error=GroupError(BATCH_CONTROL, (E(10),)),
                    audit_control_info_error=GroupError(AUDIT, (E(13), E(16))),
                ),
            ),
        ),
        {rd(0, "fatalReturn.auditControlInfoError.errorDetail[1].errorCode"): 16},
    ),
    RapCase(
        "missing_single",
        "one TAP file never received",
        return_batch(control(), (MissingReturn(40),)),
        {rd(0, "missingReturn"): {"startMissingSeqNumber": b"00040"}},
    ),
    RapCase(
        "missing_range",
        "a range of TAP files never received",
        return_batch(control(), (MissingReturn(38, 41, ("since=2026-02-27",)),)),
        {rd(0, "missingReturn"): {"startMissingSeqNumber": b"00038", "endMissingSeqNumber": b"00041", "operatorSpecList": [b"since=2026-02-27"]}},
    ),
    RapCase(
        "stop_return",
        "TAP transfers stop after file 00050",
        return_batch(control(), (StopReturn(50),)),
        {rd(0, "stopReturn.lastSeqNumber"): b"00050", "rapAuditControlInfo.totalSevereReturnValue": 0},
    ),
    RapCase(
        "mixed_all_kinds",
        "stop, missing, fatal and severe returns in one batch",
        return_batch(
            control(),
            (
                StopReturn(99),
                MissingReturn(40, 41),
                FatalReturn(43, transfer_batch_error=(E(35),)),
                SevereReturn(42, scu_event(7, 300, 30), (E(34),)),
            ),
        ),
        {"rapAuditControlInfo": {"totalSevereReturnValue": 300, "returnDetailsCount": 4, "totalSevereReturnTax": 30}},
    ),
    RapCase(
        "control_all_optional_items",
        "RapBatchControlInfo with every optional item",
        return_batch(
            control(
                test_data=True,
                roaming_partner="AFGAW",
                operator_spec=("regulator=ATRA",),
                tap_decimal_places=3,
                tap_currency="AFN",
            ),
            (SevereReturn(42, scu_event(1), (E(34),)),),
        ),
        {
            "rapBatchControlInfoRap.fileTypeIndicator": b"T",
            "rapBatchControlInfoRap.roamingPartner": b"AFGAW",
            "rapBatchControlInfoRap.tapDecimalPlaces": 3,
            "rapBatchControlInfoRap.tapCurrency": b"AFN",
            "rapBatchControlInfoRap.rapSpecificationVersionNumber": 1,
            "rapBatchControlInfoRap.rapReleaseVersionNumber": 5,
        },
    ),
    RapCase(
        "control_without_tap_version",
        "RapBatchControlInfo without the optional TAP version items",
        return_batch(control(tap_specification_version=None, tap_release_version=None), (MissingReturn(40),)),
        {"rapBatchControlInfoRap.rapReleaseVersionNumber": 5},
    ),
    RapCase(
        "max_sequence_numbers",
        "sequence numbers 99999 throughout",
        return_batch(control(rap_file_sequence_number=99999), (SevereReturn(99999, scu_event(1), (E(34),)), StopReturn(99999))),
        {"rapBatchControlInfoRap.rapFileSequenceNumber": b"99999", rd(1, "stopReturn.lastSeqNumber"): b"99999"},
    ),
    RapCase(
        "echo_incomplete_record",
        "a returned record missing a mandatory TAP group is echoed as received",
        return_batch(
            control(),
            (SevereReturn(42, ("serviceCentreUsage", {k: v for k, v in scu_event(1)[1].items() if k != "scuTimeStamps"}), (E(36),)),),
        ),
        {rd(0, "severeReturn.errorDetail[0].errorCode"): 36},
    ),
    RapCase(
        "many_error_details",
        "forty errors on one record: long-form lengths",
        return_batch(control(), (SevereReturn(42, scu_event(1), tuple(E(100 + i, (ErrorContext(12, 1, i + 1),)) for i in range(40))),)),
        {rd(0, "severeReturn.errorDetail[39].errorCode"): 139},
    ),
    RapCase(
        "audit_operator_spec",
        "operator-specific items on the RAP audit",
        return_batch(control(), (MissingReturn(40),), operator_spec=("checked-by=ATRA-ops",)),
        {"rapAuditControlInfo.operatorSpecList": [b"checked-by=ATRA-ops"]},
    ),
]

CASES_BY_NAME = {case.name: case for case in CASES}
assert len(CASES_BY_NAME) == len(CASES), "case names must be unique"
