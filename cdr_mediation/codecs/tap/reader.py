"""Reading a TAP 3.12 file written by this system back into plain values.

For verifiers and tests: decode with the shipped module, resolve offset and recording-entity
codes through NetworkInfo, turn local timestamps back into UTC and the operator-specific
"key=value" items back into the CDR's identifiers. Only ServiceCentreUsage events are
understood (the only kind written); any other call event is a decode error.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from cdr_mediation.domain.cdr import RecordType

from .. import asn1
from ..errors import CodecDecodeError

_UTC = dt.timezone.utc


@dataclasses.dataclass(frozen=True, slots=True)
class TapRecordView:
    """One ServiceCentreUsage record, in CDR terms (timestamps at TAP's second precision)."""

    cdr_id: str
    chain_seq: int
    record_type: RecordType
    ref_cdr_id: str | None
    error_code: str | None
    msisdn: str  # E.164 with '+'
    sender_id: str
    smsc_id: str
    submitted_at: dt.datetime  # UTC
    done_at: dt.datetime  # UTC
    message_status: int
    segments: int
    charged_units: int
    charge: int  # TAP units
    tax: int  # TAP units


@dataclasses.dataclass(frozen=True, slots=True)
class TapAuditView:
    total_charge: int
    total_tax: int
    total_discount: int
    count: int
    earliest: dt.datetime | None
    latest: dt.datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class TapFileView:
    kind: str  # "transferBatch" or "notification"
    sender: str
    recipient: str
    file_sequence_number: int
    specification_version: int
    release_version: int
    transfer_cut_off: dt.datetime
    file_available: dt.datetime
    file_creation: dt.datetime | None
    rap_file_sequence_number: int | None
    test_data: bool
    currency: str | None
    tap_decimal_places: int | None
    records: tuple[TapRecordView, ...]
    audit: TapAuditView | None

    def reconciliation_errors(self) -> list[str]:
        """What in AuditControlInfo does not match the records (empty when all reconciles)."""
        if self.audit is None:
            return [] if not self.records else ["records present but no AuditControlInfo"]
        errors = []
        audit = self.audit
        if audit.count != len(self.records):
            errors.append(f"callEventDetailsCount {audit.count} != {len(self.records)} records")
        if audit.total_charge != sum(r.charge for r in self.records):
            errors.append("totalCharge is not the sum of the records' charges")
        if audit.total_tax != sum(r.tax for r in self.records):
            errors.append("totalTaxValue is not the sum of the records' tax values")
        if self.records:
            earliest = min(r.done_at for r in self.records)
            latest = max(r.done_at for r in self.records)
            if audit.earliest != earliest or audit.latest != latest:
                errors.append("earliest/latestCallTimeStamp do not bound the records' completion times")
        return errors


def _local_to_utc(local: bytes, offset: bytes) -> dt.datetime:
    moment = dt.datetime.strptime(local.decode("ascii"), "%Y%m%d%H%M%S")
    text = offset.decode("ascii")
    delta = dt.timedelta(hours=int(text[1:3]), minutes=int(text[3:5]))
    zone = dt.timezone(-delta if text[0] == "-" else delta)
    return moment.replace(tzinfo=zone).astimezone(_UTC)


def _date_time_long(value: dict[str, bytes] | None) -> dt.datetime | None:
    if value is None:
        return None
    return _local_to_utc(value["localTimeStamp"], value["utcTimeOffset"])


def _bcd_to_digits(value: bytes) -> str:
    digits = value.hex()
    return digits[:-1] if digits.endswith("f") else digits


def _operator_spec(items: list[bytes]) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, separator, value = item.decode("ascii").partition("=")
        if not separator or key in pairs:
            raise CodecDecodeError(f"operatorSpecInformation item {item!r} is not a unique key=value")
        pairs[key] = value
    return pairs


def _record(event: Any, offsets: dict[int, bytes], entities: dict[int, bytes]) -> TapRecordView:
    name, scu = event
    if name != "serviceCentreUsage":
        raise CodecDecodeError("call event is not a ServiceCentreUsage (the only kind this system writes)")
    try:
        basic = scu["basicInformation"]
        _, subscriber = basic["chargeableSubscriber"]
        charge_information = scu["chargeInformation"]
        detail = charge_information["chargeDetailList"][0]
        tax = charge_information["taxInformation"][0]
        stamps = scu["scuTimeStamps"]
        spec = _operator_spec(scu["operatorSpecInformation"])
        deposit = stamps["depositTimeStamp"]
        completion = stamps["completionTimeStamp"]
        return TapRecordView(
            cdr_id=spec["cdr_id"],
            chain_seq=int(spec["chain_seq"]),
            record_type=RecordType(spec["record_type"]),
            ref_cdr_id=spec.get("ref_cdr_id"),
            error_code=spec.get("error_code"),
            msisdn="+" + _bcd_to_digits(subscriber["msisdn"]),
            sender_id=basic["nonChargedNumber"].decode("ascii"),
            smsc_id=entities[scu["recEntityCode"]].decode("ascii"),
            submitted_at=_local_to_utc(deposit["localTimeStamp"], offsets[deposit["utcTimeOffsetCode"]]),
            done_at=_local_to_utc(completion["localTimeStamp"], offsets[completion["utcTimeOffsetCode"]]),
            message_status=scu["scuChargeType"]["messageStatus"],
            segments=detail["chargeableUnits"],
            charged_units=detail["chargedUnits"],
            charge=detail["charge"],
            tax=tax["taxValue"],
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise CodecDecodeError(f"ServiceCentreUsage record is not in this system's layout: {exc!r}") from None


def decode_tap_file(data: bytes) -> TapFileView:
    """Decode a whole TAP file (TransferBatch or Notification) written by this system."""
    try:
        (kind, value), used = asn1.spec().modules[asn1.TAP_MODULE]["DataInterChange"].decode_with_length(data)
    except Exception as exc:  # asn1tools raises several error types for malformed input
        raise CodecDecodeError(f"not a TAP DataInterChange: {exc}") from None
    if used != len(data):
        raise CodecDecodeError(f"{len(data) - used} octets after the end of the DataInterChange")
    if kind is None:
        raise CodecDecodeError("DataInterChange alternative unknown to TAP 3.12")
    if kind == "notification":
        control, accounting, records, audit = value, None, (), None
    else:
        control = value["batchControlInfo"]
        accounting = value.get("accountingInfo")
        network = value.get("networkInfo", {})
        offsets = {i["utcTimeOffsetCode"]: i["utcTimeOffset"] for i in network.get("utcTimeOffsetInfo", [])}
        entities = {i["recEntityCode"]: i["recEntityId"] for i in network.get("recEntityInfo", [])}
        records = tuple(_record(event, offsets, entities) for event in value.get("callEventDetails", []))
        raw = value["auditControlInfo"]
        audit = TapAuditView(
            total_charge=raw["totalCharge"],
            total_tax=raw["totalTaxValue"],
            total_discount=raw["totalDiscountValue"],
            count=raw["callEventDetailsCount"],
            earliest=_date_time_long(raw.get("earliestCallTimeStamp")),
            latest=_date_time_long(raw.get("latestCallTimeStamp")),
        )
    cut_off = _date_time_long(control["transferCutOffTimeStamp"])
    available = _date_time_long(control["fileAvailableTimeStamp"])
    assert cut_off is not None and available is not None
    rap = control.get("rapFileSequenceNumber")
    return TapFileView(
        kind=kind,
        sender=control["sender"].decode("ascii"),
        recipient=control["recipient"].decode("ascii"),
        file_sequence_number=int(control["fileSequenceNumber"]),
        specification_version=control["specificationVersionNumber"],
        release_version=control["releaseVersionNumber"],
        transfer_cut_off=cut_off,
        file_available=available,
        file_creation=_date_time_long(control.get("fileCreationTimeStamp")),
        rap_file_sequence_number=int(rap) if rap is not None else None,
        test_data=control.get("fileTypeIndicator") == b"T",
        currency=accounting["localCurrency"].decode("ascii") if accounting else None,
        tap_decimal_places=accounting.get("tapDecimalPlaces") if accounting else None,
        records=records,
        audit=audit,
    )
