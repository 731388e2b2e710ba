"""Every TAP record and header rule: one input that breaks it and the exact message.

Record messages name the record (1-based position in the file, cdr_id), the TAP member
path and the Cdr field; header messages name the header member and the FileHeader field.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from cdr_mediation.codecs.errors import CodecValidationError
from cdr_mediation.codecs.header import TapCodes
from cdr_mediation.codecs.tap import encode_tap_file, write_tap_file
from cdr_mediation.domain.cdr import DlrStatus, RecordType

from .codec_factories import UTC, make_cdr, make_header, replace

SCU = "serviceCentreUsage"
OSI = f"{SCU}.operatorSpecInformation"
R1 = "record 1 (cdr_id=cdr-000001)"
ASCII_RULE = "must be non-empty visible ASCII without leading/trailing spaces"

RECORD_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("record-type", {"record_type": "CDR"}, f"{R1}: {OSI}[2] (record_type): 'CDR' is not a RecordType"),
    ("cdr-id-space", {"cdr_id": "cdr-000001 "}, f"record 1 (cdr_id=cdr-000001 ): {OSI}[0] (cdr_id): 'cdr-000001 ' {ASCII_RULE}"),
    ("cdr-id-non-ascii", {"cdr_id": "cdr-é"}, f"record 1 (cdr_id=cdr-é): {OSI}[0] (cdr_id): 'cdr-é' {ASCII_RULE}"),
    ("cdr-id-empty", {"cdr_id": ""}, f"record 1 (cdr_id=): {OSI}[0] (cdr_id): '' {ASCII_RULE}"),
    ("operator", {"operator_id": "op-b"}, f"{R1}: {SCU} (operator_id): 'op-b' is not this file's operator 'op-a'"),
    ("chain-seq-type", {"chain_seq": "1"}, f"{R1}: {OSI}[1] (chain_seq): must be an integer, got str"),
    ("chain-seq-positive", {"chain_seq": 0}, f"record 1 (cdr_id=cdr-000000): {OSI}[1] (chain_seq): 0 must be >= 1"),
    ("ref-on-cdr", {"ref_cdr_id": "cdr-0"}, f"{R1}: {OSI}[3] (ref_cdr_id): must be empty for record_type CDR"),
    ("void-without-ref", {"record_type": RecordType.VOID, "amount_minor": 0, "tax_minor": 0},
     f"{R1}: {OSI}[3] (ref_cdr_id): None {ASCII_RULE}"),
    ("self-reference", {"record_type": RecordType.CORRECT, "ref_cdr_id": "cdr-000001"},
     f"{R1}: {OSI}[3] (ref_cdr_id): a CORRECT cannot reference itself"),
    ("error-code", {"error_code": "E\n1"}, f"{R1}: {OSI}[3] (error_code): 'E\\n1' {ASCII_RULE}"),
    ("msisdn-plus", {"msisdn": "93701234567"},
     f"{R1}: {SCU}.basicInformation.chargeableSubscriber.gsmChargeableSubscriber.msisdn (msisdn): "
     "must be E.164: '+' and 1-15 digits, not starting with 0"),
    ("msisdn-too-long", {"msisdn": "+1234567890123456"},
     f"{R1}: {SCU}.basicInformation.chargeableSubscriber.gsmChargeableSubscriber.msisdn (msisdn): "
     "must be E.164: '+' and 1-15 digits, not starting with 0"),
    ("msisdn-leading-zero", {"msisdn": "+0701234567"},
     f"{R1}: {SCU}.basicInformation.chargeableSubscriber.gsmChargeableSubscriber.msisdn (msisdn): "
     "must be E.164: '+' and 1-15 digits, not starting with 0"),
    ("sender", {"sender_id": " ACME"}, f"{R1}: {SCU}.basicInformation.nonChargedNumber (sender_id): ' ACME' {ASCII_RULE}"),
    ("smsc", {"smsc_id": "smsc\t1"}, f"{R1}: {SCU}.recEntityCode (smsc_id): 'smsc\\t1' {ASCII_RULE}"),
    ("submitted-format", {"submitted_at": "2026-03-01T10:00:00Z"},
     f"{R1}: {SCU}.scuTimeStamps.depositTimeStamp.localTimeStamp (submitted_at): '2026-03-01T10:00:00Z' "
     "is not a UTC timestamp in format_utc form (YYYY-MM-DDThh:mm:ss.mmmZ)"),
    ("submitted-calendar", {"submitted_at": "2026-02-30T10:00:00.000Z", "done_at": "2026-03-01T10:00:00.000Z"},
     f"{R1}: {SCU}.scuTimeStamps.depositTimeStamp.localTimeStamp (submitted_at): '2026-02-30T10:00'... is not a valid calendar time"),
    ("done-format", {"done_at": "2026-03-01 10:00:05.999Z"},
     f"{R1}: {SCU}.scuTimeStamps.completionTimeStamp.localTimeStamp (done_at): '2026-03-01 10:00:05.999Z' "
     "is not a UTC timestamp in format_utc form (YYYY-MM-DDThh:mm:ss.mmmZ)"),
    ("done-before-submitted", {"submitted_at": "2026-03-01T10:00:06.000Z"},
     f"{R1}: {SCU}.scuTimeStamps.completionTimeStamp.localTimeStamp (done_at): "
     "2026-03-01T10:00:05.999Z is before submitted_at 2026-03-01T10:00:06.000Z"),
    ("done-after-cut-off", {"done_at": "2026-03-02T00:00:00.001Z"},
     f"{R1}: {SCU}.scuTimeStamps.completionTimeStamp.localTimeStamp (done_at): "
     "2026-03-02T00:00:00.001Z is after the file's transfer cut-off 2026-03-02T00:00:00.000Z"),
    ("local-time-overflow", {"submitted_at": "9999-12-31T23:00:00.000Z"},
     f"{R1}: {SCU}.scuTimeStamps.depositTimeStamp.localTimeStamp (submitted_at): "
     "'9999-12-31T23:00'... cannot be represented as local time"),
    ("currency", {"currency": "USD"}, f"{R1}: accountingInfo.localCurrency (currency): 'USD' is not the file's currency 'AFN'"),
    ("amount-negative", {"amount_minor": -1},
     f"{R1}: {SCU}.chargeInformation.chargeDetailList[0].charge (amount_minor): -1 is negative; TAP AbsoluteAmount must be >= 0"),
    ("amount-type", {"amount_minor": 1.5},
     f"{R1}: {SCU}.chargeInformation.chargeDetailList[0].charge (amount_minor): must be an integer, got float"),
    ("amount-bool", {"amount_minor": True},
     f"{R1}: {SCU}.chargeInformation.chargeDetailList[0].charge (amount_minor): must be an integer, got bool"),
    ("amount-too-large", {"amount_minor": 1 << 62},
     f"{R1}: {SCU}.chargeInformation.chargeDetailList[0].charge (amount_minor): {1 << 62} minor units is "
     f"{(1 << 62) * 10} in TAP units, above the 8-octet INTEGER limit"),
    ("tax-negative", {"tax_minor": -5},
     f"{R1}: {SCU}.chargeInformation.taxInformation[0].taxValue (tax_minor): -5 is negative; TAP AbsoluteAmount must be >= 0"),
    ("void-with-amount", {"record_type": RecordType.VOID, "ref_cdr_id": "cdr-0", "amount_minor": 0, "tax_minor": 1},
     f"{R1}: {SCU}.chargeInformation.chargeDetailList[0].charge (amount_minor): "
     "a VOID carries zero amounts (amount_minor and tax_minor must be 0)"),
    ("segments-type", {"segments": 1.0},
     f"{R1}: {SCU}.chargeInformation.chargeDetailList[0].chargeableUnits (segments): must be an integer, got float"),
    ("segments-zero", {"segments": 0},
     f"{R1}: {SCU}.chargeInformation.chargeDetailList[0].chargeableUnits (segments): 0 is outside 1..255"),
    ("segments-256", {"segments": 256},
     f"{R1}: {SCU}.chargeInformation.chargeDetailList[0].chargeableUnits (segments): 256 is outside 1..255"),
    ("billable", {"billable": 1},
     f"{R1}: {SCU}.chargeInformation.chargeDetailList[0].chargedUnits (billable): must be a boolean"),
    ("status-type", {"status": "DELIVERED"},
     f"{R1}: {SCU}.scuChargeType.messageStatus (status): 'DELIVERED' is not a DlrStatus with a messageStatus code in this file's TAP codes"),
]


@pytest.mark.parametrize(("changes", "message"), [c[1:] for c in RECORD_CASES], ids=[c[0] for c in RECORD_CASES])
def test_record_rule(changes: dict[str, Any], message: str):
    changes = dict(changes)
    seq = changes.pop("chain_seq", 1)
    cdr = make_cdr(seq if isinstance(seq, int) else 1, **changes)
    if not isinstance(seq, int):
        cdr = replace(cdr, chain_seq=seq)
    with pytest.raises(CodecValidationError) as error:
        encode_tap_file(make_header(), [cdr])
    assert str(error.value) == message
    assert error.value.record_index == 1


def test_message_for_a_bad_msisdn_does_not_contain_the_number():
    with pytest.raises(CodecValidationError) as error:
        encode_tap_file(make_header(), [make_cdr(msisdn="+93 70 123")])
    assert "70" not in str(error.value)


def test_status_without_a_code_in_the_operator_table():
    codes = TapCodes(message_status=((DlrStatus.DELIVERED, 1),))
    with pytest.raises(CodecValidationError) as error:
        encode_tap_file(make_header(codes=codes), [make_cdr(status=DlrStatus.EXPIRED)])
    assert str(error.value) == (
        f"{R1}: {SCU}.scuChargeType.messageStatus (status): <DlrStatus.EXPIRED: 'EXPIRED'> "
        "is not a DlrStatus with a messageStatus code in this file's TAP codes"
    )


def test_amount_not_representable_with_fewer_tap_decimals():
    header = make_header(currency="KWD", currency_exponent=3, tap_decimal_places=2)
    with pytest.raises(CodecValidationError) as error:
        encode_tap_file(header, [make_cdr(currency="KWD", amount_minor=1234)])
    assert str(error.value) == (
        f"{R1}: {SCU}.chargeInformation.chargeDetailList[0].charge (amount_minor): 1234 minor units "
        "(currency exponent 3) cannot be written with tapDecimalPlaces 2 without rounding"
    )


def test_chain_order_names_the_second_record_and_leaves_no_file(tmp_path: Path):
    records = [make_cdr(5), make_cdr(3)]
    with pytest.raises(CodecValidationError) as error:
        write_tap_file(tmp_path / "out.tap", make_header(), records)
    assert str(error.value) == (
        "record 2 (cdr_id=cdr-000003): callEventDetails (chain_seq): 3 does not follow 5: "
        "records must be in strictly increasing chain order"
    )
    assert (error.value.record_index, error.value.cdr_id, error.value.source_field) == (2, "cdr-000003", "chain_seq")
    assert list(tmp_path.iterdir()) == []


def test_duplicate_chain_seq_is_rejected_even_after_sorting():
    with pytest.raises(CodecValidationError, match="4 does not follow 4"):
        encode_tap_file(make_header(), [make_cdr(4, cdr_id="a"), make_cdr(4, cdr_id="b")])


def test_file_totals_beyond_8_octets_are_rejected():
    header = make_header(tap_decimal_places=2)
    big = (1 << 62) + 1
    with pytest.raises(CodecValidationError) as error:
        encode_tap_file(header, [make_cdr(1, amount_minor=big), make_cdr(2, amount_minor=big)])
    assert str(error.value) == f"file: auditControlInfo.totalCharge: INTEGER {2 * big} does not fit in 8 octets"


# -- header ----------------------------------------------------------------------------------

H = "header"
NAIVE = dt.datetime(2026, 3, 2)

HEADER_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("operator", {"operator_id": ""}, f"{H}: batchControlInfo (operator_id): must be a non-empty string"),
    ("sender-type", {"sender": None}, f"{H}: batchControlInfo (sender): must be a string"),
    ("time-zone-range", {"time_zone": "+1500"},
     f"{H}: networkInfo.utcTimeOffsetInfo (time_zone): UTC offset '+1500' is out of range (HH <= 14, MM <= 59)"),
    ("time-zone-name", {"time_zone": "Mars/Olympus"},
     f"{H}: networkInfo.utcTimeOffsetInfo (time_zone): time zone 'Mars/Olympus' is neither +HHMM/-HHMM nor a known IANA zone"),
    ("sequence-zero", {"file_sequence_number": 0},
     f"{H}: batchControlInfo.fileSequenceNumber (file_sequence_number): 0 must be an integer in 1..99999 (NumberString SIZE(5))"),
    ("sequence-large", {"file_sequence_number": 100000},
     f"{H}: batchControlInfo.fileSequenceNumber (file_sequence_number): 100000 must be an integer in 1..99999 (NumberString SIZE(5))"),
    ("rap-sequence", {"rap_file_sequence_number": "7"},
     f"{H}: batchControlInfo.rapFileSequenceNumber (rap_file_sequence_number): '7' must be an integer in 1..99999 (NumberString SIZE(5))"),
    ("cut-off-naive", {"transfer_cut_off": NAIVE},
     f"{H}: batchControlInfo.transferCutOffTimeStamp (transfer_cut_off): must be a timezone-aware datetime"),
    ("available-naive", {"file_available": NAIVE},
     f"{H}: batchControlInfo.fileAvailableTimeStamp (file_available): must be a timezone-aware datetime"),
    ("creation-naive", {"file_creation": NAIVE},
     f"{H}: batchControlInfo.fileCreationTimeStamp (file_creation): must be a timezone-aware datetime"),
    ("same-parties", {"recipient": "AFGAW"}, f"{H}: batchControlInfo.recipient (recipient): sender and recipient must differ"),
    ("available-before-cut-off", {"file_available": dt.datetime(2026, 3, 1, 23, tzinfo=UTC)},
     f"{H}: batchControlInfo.fileAvailableTimeStamp (file_available): must not be earlier than the transfer cut-off"),
    ("creation-after-available", {"file_creation": dt.datetime(2026, 3, 2, 2, tzinfo=UTC)},
     f"{H}: batchControlInfo.fileCreationTimeStamp (file_creation): must not be later than file_available"),
    ("currency-exponent", {"currency_exponent": 5},
     f"{H}: accountingInfo.localCurrency (currency_exponent): 5 must be an ISO 4217 exponent 0..4"),
    ("tap-decimal-places-type", {"tap_decimal_places": "3"},
     f"{H}: accountingInfo.tapDecimalPlaces (tap_decimal_places): '3' must be an integer"),
    ("tap-decimal-places-range", {"tap_decimal_places": 7},
     f"{H}: accountingInfo.tapDecimalPlaces: TapDecimalPlaces must be in 0..6, got 7"),
    ("sender-tadig", {"sender": "AFG"}, f"{H}: batchControlInfo.sender: size 3 octets breaks PlmnId SIZE(5)"),
    ("recipient-tadig", {"recipient": "afgra"},
     f"{H}: batchControlInfo.recipient: PlmnId must be a TADIG code: 3 letters A-Z then 2 letters or digits, got b'afgra'"),
    ("currency", {"currency": "Afn"},
     f"{H}: accountingInfo.localCurrency: Currency must be an ISO 4217 code (3 letters A-Z), got b'Afn'"),
    ("duplicate-status", {"codes": TapCodes(message_status=((DlrStatus.DELIVERED, 1), (DlrStatus.DELIVERED, 2)))},
     f"{H}: serviceCentreUsage.scuChargeType.messageStatus (codes.message_status): a status is listed twice"),
    ("charged-item", {"codes": TapCodes(charged_item="EV")},
     f"{H}: callEventDetails[*].serviceCentreUsage.chargeInformation.chargedItem: size 2 octets breaks ChargedItem SIZE(1)"),
    ("charge-type", {"codes": TapCodes(charge_type="0")},
     f"{H}: callEventDetails[*].serviceCentreUsage.chargeInformation.chargeDetailList[0].chargeType: size 1 octets breaks ChargeType SIZE(2..3)"),
    ("charging-point", {"codes": TapCodes(charging_point="")},
     f"{H}: callEventDetails[*].serviceCentreUsage.scuTimeStamps.chargingPoint: must not be empty (zero-length elements are not allowed)"),
    ("tax-type", {"codes": TapCodes(tax_type="1")}, f"{H}: accountingInfo.taxation[0].taxType: size 1 octets breaks TaxType SIZE(2)"),
    ("tax-rate", {"codes": TapCodes(tax_rate="10")}, f"{H}: accountingInfo.taxation[0].taxRate: size 2 octets breaks TaxRate SIZE(7)"),
    ("message-description", {"codes": TapCodes(message_description=" A2P")},
     f"{H}: messageDescriptionInfo[0].messageDescription: AsciiString must not have leading or trailing spaces (receivers discard them), got b' A2P'"),
    ("status-code", {"codes": TapCodes(message_status=((DlrStatus.DELIVERED, 1 << 63),))},
     f"{H}: serviceCentreUsage.scuChargeType.messageStatus (codes.message_status): {1 << 63} is not an 8-octet INTEGER"),
    ("exchange-rate-code", {"codes": TapCodes(exchange_rate_code=-1)},
     f"{H}: accountingInfo.currencyConversionInfo[0].exchangeRateCode: Code must be >= 0, got -1"),
]


@pytest.mark.parametrize(("changes", "message"), [c[1:] for c in HEADER_CASES], ids=[c[0] for c in HEADER_CASES])
def test_header_rule(changes: dict[str, Any], message: str, tmp_path: Path):
    with pytest.raises(CodecValidationError) as error:
        write_tap_file(tmp_path / "out.tap", make_header(**changes), [make_cdr()])
    assert str(error.value) == message
    assert error.value.record_index is None
    assert list(tmp_path.iterdir()) == []


def test_header_rules_apply_to_notifications_too():
    with pytest.raises(CodecValidationError, match="sender and recipient must differ"):
        encode_tap_file(make_header(recipient="AFGAW"), [])
