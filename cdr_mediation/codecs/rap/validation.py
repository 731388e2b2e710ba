"""RAP 1.05 rules beyond the ASN.1 structure, applied on encode and (by default) on decode.

The structural rules (mandatory members, SIZE on named types such as Sender SIZE(5) and
FileSequenceNumber SIZE(5), character sets) are checked by `constraints.ConstraintChecker`
over the RAP-0105 module. TAP structures echoed inside a RAP file are left alone: they are
returned as received, errors included. On top, the rules below, each raising
`CodecValidationError` with the member path.
"""

from __future__ import annotations

from typing import Any

from .. import asn1
from ..constraints import checker
from ..errors import CodecValidationError
from .model import (
    RAP_RELEASE_VERSION,
    RAP_SPECIFICATION_VERSION,
    Acknowledgement,
    FatalReturn,
    MissingReturn,
    RapFile,
    ReturnBatch,
    SevereReturn,
    severe_return_amounts,
)

# TAP groups that RAP carries back as received.
ECHOED_TAP_TYPES = frozenset(
    {
        "CallEventDetail",
        "Notification",
        "BatchControlInfo",
        "AccountingInfo",
        "NetworkInfo",
        "AuditControlInfo",
        "MessageDescriptionInfoList",
    }
)


def validate(rap: RapFile, value: tuple[str, dict[str, Any]]) -> None:
    """Check a RAP file given as the model and its asn1tools value (`codec.to_asn1`)."""
    kind, body = value
    scope = "ReturnBatch" if kind == "returnBatch" else "Acknowledgement"

    def fail(path: str, reason: str) -> CodecValidationError:
        return CodecValidationError(path, reason, scope=scope)

    type_name = "ReturnBatch" if kind == "returnBatch" else "Acknowledgement"
    checker().check(type_name, body, path="", scope=scope, module=asn1.RAP_MODULE, opaque=ECHOED_TAP_TYPES)

    if isinstance(rap, ReturnBatch):
        _validate_return_batch(rap, body, fail)
    elif isinstance(rap, Acknowledgement):
        if body.get("fileTypeIndicator", b"T") != b"T":
            raise fail("fileTypeIndicator", "only 'T' (test data) is defined")
        if rap.sender == rap.recipient:
            raise fail("recipient", "sender and recipient must differ")
        if rap.available.to_utc() < rap.creation.to_utc():
            raise fail("ackFileAvailableTimeStamp", "is earlier than ackFileCreationTimeStamp")
    else:  # pragma: no cover - to_asn1 rejects other types first
        raise TypeError(type(rap).__name__)


def _validate_return_batch(rap: ReturnBatch, body: dict[str, Any], fail: Any) -> None:
    control = rap.control
    path = "rapBatchControlInfoRap"
    if body[path].get("fileTypeIndicator", b"T") != b"T":
        raise fail(f"{path}.fileTypeIndicator", "only 'T' (test data) is defined")
    if (control.rap_specification_version, control.rap_release_version) != (
        RAP_SPECIFICATION_VERSION,
        RAP_RELEASE_VERSION,
    ):
        raise fail(
            f"{path}.rapReleaseVersionNumber",
            f"RAP {control.rap_specification_version}.{control.rap_release_version:02d} is not RAP 1.05",
        )
    if control.sender == control.recipient:
        raise fail(f"{path}.recipient", "sender and recipient must differ")
    if control.available.to_utc() < control.creation.to_utc():
        raise fail(f"{path}.rapFileAvailableTimeStamp", "is earlier than rapFileCreationTimeStamp")

    if not rap.returns:
        raise fail("returnDetails", "a ReturnBatch returns at least one item")
    total_charge = total_tax = 0
    for index, detail in enumerate(rap.returns):
        item = f"returnDetails[{index}]"
        if isinstance(detail, MissingReturn):
            end = detail.end_missing_seq_number
            if end is not None and end < detail.start_missing_seq_number:
                raise fail(f"{item}.missingReturn.endMissingSeqNumber", "is before startMissingSeqNumber")
        elif isinstance(detail, FatalReturn):
            groups = [
                detail.transfer_batch_error,
                detail.notification_error,
                detail.batch_control_error,
                detail.accounting_info_error,
                detail.network_info_error,
                detail.message_description_error,
                detail.audit_control_info_error,
            ]
            if all(group is None for group in groups):
                raise fail(f"{item}.fatalReturn", "names no erroneous group (at least one *Error is required)")
            fatal = body["returnDetails"][index][1]
            for member, group in fatal.items():
                if member.endswith("Error"):
                    _error_details(group["errorDetail"], f"{item}.fatalReturn.{member}.errorDetail", fail)
        elif isinstance(detail, SevereReturn):
            if not (isinstance(detail.call_event, tuple) and detail.call_event[0] == "serviceCentreUsage"):
                raise fail(
                    f"{item}.severeReturn.callEventDetail",
                    "only ServiceCentreUsage events are exchanged with this system",
                )
            _error_details(
                body["returnDetails"][index][1]["errorDetail"], f"{item}.severeReturn.errorDetail", fail
            )
            charge, tax = severe_return_amounts(detail.call_event)
            total_charge += charge
            total_tax += tax

    audit = rap.audit
    if audit.return_details_count != len(rap.returns):
        raise fail(
            "rapAuditControlInfo.returnDetailsCount",
            f"{audit.return_details_count} but the batch returns {len(rap.returns)} items",
        )
    if audit.total_severe_return_value != total_charge:
        raise fail(
            "rapAuditControlInfo.totalSevereReturnValue",
            f"{audit.total_severe_return_value} but the severe returns' charges add up to {total_charge}",
        )
    if audit.total_severe_return_tax is not None and audit.total_severe_return_tax != total_tax:
        raise fail(
            "rapAuditControlInfo.totalSevereReturnTax",
            f"{audit.total_severe_return_tax} but the severe returns' taxes add up to {total_tax}",
        )


def _error_details(details: list[dict[str, Any]], path: str, fail: Any) -> None:
    if not details:
        raise fail(path, "an error is reported with at least one ErrorDetail")
    for index, detail in enumerate(details):
        here = f"{path}[{index}]"
        if detail["errorCode"] < 0:
            raise fail(f"{here}.errorCode", "must be >= 0")
        if detail.get("itemOffset", 0) < 0:
            raise fail(f"{here}.itemOffset", "must be >= 0")
        for position, context in enumerate(detail.get("errorContext", [])):
            where = f"{here}.errorContext[{position}]"
            if context["pathItemId"] < 1:
                raise fail(f"{where}.pathItemId", "must be >= 1")
            if context["itemLevel"] < 1:
                raise fail(f"{where}.itemLevel", "must be >= 1 (1 is the top level)")
            if context.get("itemOccurrence", 1) < 1:
                raise fail(f"{where}.itemOccurrence", "must be >= 1")

