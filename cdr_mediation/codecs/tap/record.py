"""One CDR as one TAP 3.12 ServiceCentreUsage record: mapping and per-record validation.

`RecordMapper.map_all()` is the single place where a `Cdr` becomes TAP values. It validates the
record (every rule raises `CodecValidationError` naming the record, the TAP member path and
the `Cdr` field) and yields the record's TAP primitive values (`ScuFields`). Two serialisers
consume `ScuFields`: `scu_value()` (asn1tools' Python form, encoded by the reference codec)
and `fast.ScuEncoder` (hand-written BER). Because the mapping is shared, comparing the two
encoders' bytes tests exactly the serialisation.

Mapping (docs/codecs.md has the full table):

    msisdn          -> basicInformation.chargeableSubscriber.gsmChargeableSubscriber.msisdn (BCD)
    sender_id       -> basicInformation.nonChargedNumber
    smsc_id         -> recEntityCode (NetworkInfo.recEntityInfo carries the SMSC id)
    amount_minor    -> chargeInformation.chargeDetailList[0].charge and taxInformation[0].taxableAmount
    tax_minor       -> chargeInformation.taxInformation[0].taxValue
    segments        -> chargeDetail.chargeableUnits; chargedUnits = segments if billable else 0
    status          -> scuChargeType.messageStatus (TapCodes.message_status)
    submitted_at    -> scuTimeStamps.depositTimeStamp
    done_at         -> scuTimeStamps.completionTimeStamp
    cdr_id, chain_seq, record_type, ref_cdr_id, error_code -> operatorSpecInformation "key=value"
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from cdr_mediation.domain.cdr import Cdr, DlrStatus, RecordType, format_utc

from ..errors import CodecValidationError
from ..header import FileHeader
from .timestamps import EventClock

SCU = "serviceCentreUsage"
PATH_MSISDN = f"{SCU}.basicInformation.chargeableSubscriber.gsmChargeableSubscriber.msisdn"
PATH_SENDER = f"{SCU}.basicInformation.nonChargedNumber"
PATH_REC_ENTITY = f"{SCU}.recEntityCode"
PATH_CHARGE = f"{SCU}.chargeInformation.chargeDetailList[0].charge"
PATH_UNITS = f"{SCU}.chargeInformation.chargeDetailList[0].chargeableUnits"
PATH_CHARGED_UNITS = f"{SCU}.chargeInformation.chargeDetailList[0].chargedUnits"
PATH_TAX = f"{SCU}.chargeInformation.taxInformation[0].taxValue"
PATH_CURRENCY = "accountingInfo.localCurrency"
PATH_STATUS = f"{SCU}.scuChargeType.messageStatus"
PATH_DEPOSIT = f"{SCU}.scuTimeStamps.depositTimeStamp.localTimeStamp"
PATH_COMPLETION = f"{SCU}.scuTimeStamps.completionTimeStamp.localTimeStamp"
PATH_OSI = f"{SCU}.operatorSpecInformation"
PATH_ORDER = "callEventDetails"

# E.164: a '+', then at most 15 digits, the first (country code) not 0.
_E164 = re.compile(r"\+[1-9][0-9]{0,14}")
# Values written as AsciiString: visible ISO 646, no leading/trailing space (receivers strip).
_ASCII_VISIBLE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
MAX_AMOUNT = (1 << 63) - 1  # AbsoluteAmount as an 8-octet INTEGER
MAX_SEGMENTS = 255  # concatenated SMS: at most 255 parts (3GPP TS 23.040)
_CACHE_LIMIT = 100_000
_VOID_AMOUNTS = "a VOID carries zero amounts (amount_minor and tax_minor must be 0)"
# Keyed by the enum's value: hashing an Enum member runs Python code, hashing a str does not.
_RECORD_TYPE_ITEM = {rt.value: b"record_type=" + rt.value.encode("ascii") for rt in RecordType}


class ScuFields(NamedTuple):
    """The TAP values of one ServiceCentreUsage record, already validated."""

    msisdn: bytes  # BCD
    sender: bytes
    rec_entity_code: int
    charge: int
    chargeable_units: int
    charged_units: int
    tax_value: int
    taxable_amount: int
    message_status: int
    deposit: bytes  # localTimeStamp
    deposit_offset_code: int
    completion: bytes
    completion_offset_code: int
    operator_spec: tuple[bytes, ...]


def bcd_digits(digits: str) -> bytes:
    """Pack decimal digits as TAP BCDString: two per octet, high nibble first, `f` filler."""
    if len(digits) % 2:
        digits += "f"
    return bytes.fromhex(digits)


def _fail(path: str, field: str, reason: str) -> CodecValidationError:
    return CodecValidationError(path, reason, source_field=field)


def ascii_value(value: Any, path: str, field: str) -> bytes:
    if not isinstance(value, str) or not _ASCII_VISIBLE.fullmatch(value):
        raise _fail(path, field, f"{value!r} must be non-empty visible ASCII without leading/trailing spaces")
    return value.encode("ascii")


def _count(value: Any, path: str, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(path, field, f"must be an integer, got {type(value).__name__}")
    return value


class AmountScale:
    """Minor units of the currency (ISO 4217 exponent) to TAP AbsoluteAmount, exactly.

    TAP amounts are integers scaled by 10^tapDecimalPlaces. With more TAP decimal places than
    the currency has, amounts are multiplied; with fewer, an amount that is not a multiple of
    the divisor cannot be written without rounding and is rejected.
    """

    __slots__ = ("factor", "divisor", "_exponent", "_places")

    def __init__(self, currency_exponent: int, tap_decimal_places: int) -> None:
        self._exponent = currency_exponent
        self._places = tap_decimal_places
        shift = tap_decimal_places - currency_exponent
        self.factor = 10 ** max(shift, 0)
        self.divisor = 10 ** max(-shift, 0)

    def to_tap(self, minor: Any, path: str, field: str) -> int:
        minor = _count(minor, path, field)
        if minor < 0:
            raise _fail(path, field, f"{minor} is negative; TAP AbsoluteAmount must be >= 0")
        if self.divisor != 1:
            whole, rest = divmod(minor, self.divisor)
            if rest:
                raise _fail(
                    path,
                    field,
                    f"{minor} minor units (currency exponent {self._exponent}) cannot be written "
                    f"with tapDecimalPlaces {self._places} without rounding",
                )
            value = whole
        else:
            value = minor * self.factor
        if value > MAX_AMOUNT:
            raise _fail(path, field, f"{minor} minor units is {value} in TAP units, above the 8-octet INTEGER limit")
        return value

    def to_minor(self, tap: int) -> int:
        """Inverse, for readers: TAP units back to minor units (exact by construction)."""
        return tap * self.divisor // self.factor


class BatchTotals:
    """What AuditControlInfo reports, accumulated over the records of the file."""

    __slots__ = ("count", "total_charge", "total_tax", "earliest", "latest", "first_chain_seq", "last_chain_seq")

    def __init__(self) -> None:
        self.count = 0
        self.total_charge = 0  # TAP units
        self.total_tax = 0
        # format_utc of the earliest/latest completion (done_at). Milliseconds are not in
        # TAP, but the earliest second is the second of the earliest instant, so comparing
        # the full strings is exact.
        self.earliest: str | None = None
        self.latest: str | None = None
        self.first_chain_seq: int | None = None
        self.last_chain_seq: int | None = None


class RecordMapper:
    """Validates the CDRs of one file and maps them to `ScuFields`, in chain order.

    It also hands out recording-entity codes (one per SMSC, first met first), through the
    `EventClock` UTC offset codes (both lists become NetworkInfo), and keeps the totals that
    AuditControlInfo reports, so that the totals are by construction the sums of exactly the
    records that were mapped.
    """

    def __init__(self, header: FileHeader, clock: EventClock, *, index_base: int = 0) -> None:
        codes = header.codes
        # Records of the file before the first one mapped here (a later part of a file is
        # mapped in another process): errors name the record's position in the whole file.
        self._index_base = index_base
        self._operator_id = header.operator_id
        self._currency = header.currency
        self._clock = clock
        self._scale = AmountScale(header.currency_exponent, header.tap_decimal_places)
        # Keyed by the enum's value (see _RECORD_TYPE_ITEM).
        self._status_codes: dict[str, int] = {status.value: code for status, code in codes.message_status}
        # Fixed-width format_utc strings compare in time order, so the cut-off check is a
        # string comparison (no datetime parsing per record).
        self._cut_off = format_utc(header.transfer_cut_off)
        self.rec_entities: list[str] = []  # index = recEntityCode, value = smsc_id
        self._rec_codes: dict[str, int] = {}
        self._senders: dict[str, bytes] = {}
        self.totals = BatchTotals()

    def meet_smsc(self, smsc_id: str) -> None:
        """Meet an SMSC as a record would: it gets the next recording entity code if it is new."""
        if smsc_id not in self._rec_codes:
            ascii_value(smsc_id, PATH_REC_ENTITY, "smsc_id")
            self._rec_codes[smsc_id] = len(self.rec_entities)
            self.rec_entities.append(smsc_id)

    def map_all(self, cdrs: Iterable[Cdr]) -> Iterator[tuple[Any, ...]]:
        """Validate and map records, yielding each record's fields before reading the next.

        Each record comes as a plain tuple in `ScuFields` order.

        A failing rule raises `CodecValidationError` for the record's position in the file
        (1-based) and its cdr_id. The rules run in a fixed order, so the failure reported for
        a record is deterministic. This loop runs millions of times per file: state lives in
        locals for its duration, checks are inline (`x.__class__ is int` also rejects bool)
        and per-value results are cached where values repeat (senders, SMSCs, minutes).
        """
        totals = self.totals
        count = index = totals.count
        first = totals.first_chain_seq
        last = totals.last_chain_seq
        total_charge = totals.total_charge
        total_tax = totals.total_tax
        earliest = totals.earliest
        latest = totals.latest
        operator_id = self._operator_id
        currency = self._currency
        cut_off = self._cut_off
        event_time = self._clock.event_time
        seconds = self._clock.seconds
        millis = self._clock.millis
        scale = self._scale
        factor = scale.factor if scale.divisor == 1 else 0  # exact multiply; division is checked
        status_codes = self._status_codes
        senders = self._senders
        rec_codes = self._rec_codes
        record_type_items = _RECORD_TYPE_ITEM
        cdr_kind, void_kind = RecordType.CDR, RecordType.VOID
        cdr: Any = None
        try:
            for cdr in cdrs:
                index += 1
                record_type = cdr.record_type
                if record_type.__class__ is not RecordType:
                    raise _fail(f"{PATH_OSI}[2]", "record_type", f"{record_type!r} is not a RecordType")
                cdr_id = cdr.cdr_id
                # _ASCII_VISIBLE, inline with str methods (no regex engine, no call)
                if not (
                    cdr_id.__class__ is str
                    and cdr_id.isascii()
                    and cdr_id.isprintable()
                    and cdr_id
                    and cdr_id[0] != " "
                    and cdr_id[-1] != " "
                ):
                    ascii_value(cdr_id, f"{PATH_OSI}[0]", "cdr_id")  # raises with the reason
                if cdr.operator_id != operator_id:
                    raise _fail(SCU, "operator_id", f"{cdr.operator_id!r} is not this file's operator {operator_id!r}")
                chain_seq = cdr.chain_seq
                if chain_seq.__class__ is not int:
                    raise _fail(f"{PATH_OSI}[1]", "chain_seq", f"must be an integer, got {type(chain_seq).__name__}")
                if chain_seq < 1:
                    raise _fail(f"{PATH_OSI}[1]", "chain_seq", f"{chain_seq} must be >= 1")
                if last is not None and chain_seq <= last:
                    raise _fail(
                        PATH_ORDER,
                        "chain_seq",
                        f"{chain_seq} does not follow {last}: records must be in strictly increasing chain order",
                    )
                operator_spec: tuple[bytes, ...] = (
                    b"cdr_id=" + cdr_id.encode(),
                    b"chain_seq=%d" % chain_seq,
                    record_type_items[record_type._value_],
                )
                if record_type is cdr_kind:
                    if cdr.ref_cdr_id is not None:
                        raise _fail(f"{PATH_OSI}[3]", "ref_cdr_id", "must be empty for record_type CDR")
                else:
                    ref = ascii_value(cdr.ref_cdr_id, f"{PATH_OSI}[3]", "ref_cdr_id")
                    if cdr.ref_cdr_id == cdr_id:
                        raise _fail(f"{PATH_OSI}[3]", "ref_cdr_id", f"a {record_type.value} cannot reference itself")
                    operator_spec += (b"ref_cdr_id=" + ref,)
                if cdr.error_code is not None:
                    error = ascii_value(cdr.error_code, f"{PATH_OSI}[{len(operator_spec)}]", "error_code")
                    operator_spec += (b"error_code=" + error,)

                msisdn = cdr.msisdn
                if msisdn.__class__ is not str or not _E164.fullmatch(msisdn):
                    # The number stays out of the message: MSISDNs are never logged in clear.
                    raise _fail(PATH_MSISDN, "msisdn", "must be E.164: '+' and 1-15 digits, not starting with 0")
                digits = msisdn[1:]  # bcd_digits(), inlined
                msisdn_bcd = bytes.fromhex(digits + "f" if len(digits) & 1 else digits)

                sender_id = cdr.sender_id
                sender = senders.get(sender_id) if sender_id.__class__ is str else None
                if sender is None:
                    sender = ascii_value(sender_id, PATH_SENDER, "sender_id")
                    if len(senders) < _CACHE_LIMIT:  # bounded: memory must not grow with the file
                        senders[sender_id] = sender

                smsc_id = cdr.smsc_id
                rec_entity_code = rec_codes.get(smsc_id) if smsc_id.__class__ is str else None
                if rec_entity_code is None:
                    ascii_value(smsc_id, PATH_REC_ENTITY, "smsc_id")
                    rec_entity_code = rec_codes[smsc_id] = len(self.rec_entities)
                    self.rec_entities.append(smsc_id)

                submitted_at = cdr.submitted_at
                done_at = cdr.done_at
                # EventClock.event_time's cache lookup, inlined (same caches, same rule).
                deposit_time = completion_time = None
                if submitted_at.__class__ is str and done_at.__class__ is str:
                    if submitted_at[19:] in millis and done_at[19:] in millis:
                        deposit_time = seconds.get(submitted_at[:19])
                        completion_time = seconds.get(done_at[:19])
                if deposit_time is None:
                    try:
                        deposit_time = event_time(submitted_at)
                    except ValueError as exc:
                        raise _fail(PATH_DEPOSIT, "submitted_at", str(exc)) from None
                if completion_time is None:
                    try:
                        completion_time = event_time(done_at)
                    except ValueError as exc:
                        raise _fail(PATH_COMPLETION, "done_at", str(exc)) from None
                deposit, deposit_code = deposit_time
                completion, completion_code = completion_time
                # Both are now format_utc strings of one width, which compare in time order.
                if submitted_at > done_at:
                    raise _fail(PATH_COMPLETION, "done_at", f"{done_at} is before submitted_at {submitted_at}")
                if done_at > cut_off:
                    raise _fail(PATH_COMPLETION, "done_at", f"{done_at} is after the file's transfer cut-off {cut_off}")

                if cdr.currency != currency:
                    raise _fail(PATH_CURRENCY, "currency", f"{cdr.currency!r} is not the file's currency {currency!r}")
                amount = cdr.amount_minor
                tax = cdr.tax_minor
                if factor and amount.__class__ is int and tax.__class__ is int and amount >= 0 and tax >= 0:
                    charge = amount * factor
                    tax_value = tax * factor
                    if charge > MAX_AMOUNT or tax_value > MAX_AMOUNT:
                        charge = scale.to_tap(amount, PATH_CHARGE, "amount_minor")  # raises
                        tax_value = scale.to_tap(tax, PATH_TAX, "tax_minor")
                else:  # fewer TAP decimals than the currency has, or a value to reject
                    charge = scale.to_tap(amount, PATH_CHARGE, "amount_minor")
                    tax_value = scale.to_tap(tax, PATH_TAX, "tax_minor")
                if record_type is void_kind and (charge or tax_value):
                    raise _fail(PATH_CHARGE, "amount_minor", _VOID_AMOUNTS)

                segments = cdr.segments
                if segments.__class__ is not int:
                    raise _fail(PATH_UNITS, "segments", f"must be an integer, got {type(segments).__name__}")
                if not 1 <= segments <= MAX_SEGMENTS:
                    raise _fail(PATH_UNITS, "segments", f"{segments} is outside 1..{MAX_SEGMENTS}")
                billable = cdr.billable
                if billable.__class__ is not bool:
                    raise _fail(PATH_CHARGED_UNITS, "billable", "must be a boolean")

                status = cdr.status
                status = status_codes.get(status._value_) if status.__class__ is DlrStatus else None
                if status is None:
                    raise _fail(
                        PATH_STATUS,
                        "status",
                        f"{cdr.status!r} is not a DlrStatus with a messageStatus code in this file's TAP codes",
                    )

                # A plain tuple in ScuFields order: building the NamedTuple would cost a second
                # allocation per record (ScuFields._make(fields) gives the names back).
                yield (
                    msisdn_bcd,
                    sender,
                    rec_entity_code,
                    charge,
                    segments,
                    segments if billable else 0,
                    tax_value,
                    charge,
                    status,
                    deposit,
                    deposit_code,
                    completion,
                    completion_code,
                    operator_spec,
                )
                # The consumer took the record and asked for the next one: account for it.
                # (A consumer that stops right after a yield leaves that record uncounted,
                # and the totals stay the sums of exactly the counted records.)
                count = index
                if first is None:
                    first = chain_seq
                last = chain_seq
                total_charge += charge
                total_tax += tax_value
                if earliest is None or done_at < earliest:
                    earliest = done_at
                if latest is None or done_at > latest:
                    latest = done_at
        except CodecValidationError as exc:
            raise exc.for_record(self._index_base + index, _printable_id(cdr)) from None
        finally:
            totals.count = count
            totals.first_chain_seq = first
            totals.last_chain_seq = last
            totals.total_charge = total_charge
            totals.total_tax = total_tax
            totals.earliest = earliest
            totals.latest = latest


def _printable_id(cdr: Any) -> str:
    value = getattr(cdr, "cdr_id", None)
    return value if isinstance(value, str) and value.isprintable() else repr(value)


def scu_value(fields: tuple[Any, ...], header: FileHeader) -> tuple[str, dict[str, Any]]:
    """The record (ScuFields or a tuple in its order) in asn1tools' Python form (a
    `CallEventDetail` CHOICE value)."""
    fields = ScuFields._make(fields)
    codes = header.codes
    return (
        "serviceCentreUsage",
        {
            "basicInformation": {
                "chargeableSubscriber": ("gsmChargeableSubscriber", {"msisdn": fields.msisdn}),
                "chargedPartyStatus": codes.charged_party_status,
                "nonChargedNumber": fields.sender,
            },
            "recEntityCode": fields.rec_entity_code,
            "chargeInformation": {
                "chargedItem": codes.charged_item.encode("ascii"),
                "exchangeRateCode": codes.exchange_rate_code,
                "chargeDetailList": [
                    {
                        "chargeType": codes.charge_type.encode("ascii"),
                        "charge": fields.charge,
                        "chargeableUnits": fields.chargeable_units,
                        "chargedUnits": fields.charged_units,
                    }
                ],
                "taxInformation": [
                    {
                        "taxCode": codes.tax_code,
                        "taxValue": fields.tax_value,
                        "taxableAmount": fields.taxable_amount,
                    }
                ],
            },
            "scuChargeType": {
                "messageStatus": fields.message_status,
                "priorityCode": codes.priority_code,
                "messageType": codes.message_type,
                "messageDescriptionCode": codes.message_description_code,
            },
            "scuTimeStamps": {
                "depositTimeStamp": {
                    "localTimeStamp": fields.deposit,
                    "utcTimeOffsetCode": fields.deposit_offset_code,
                },
                "completionTimeStamp": {
                    "localTimeStamp": fields.completion,
                    "utcTimeOffsetCode": fields.completion_offset_code,
                },
                "chargingPoint": codes.charging_point.encode("ascii"),
            },
            "operatorSpecInformation": list(fields.operator_spec),
        },
    )
