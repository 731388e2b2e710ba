"""Hand-written BER for the one record template this system writes: ServiceCentreUsage.

asn1tools' generic encoder walks the type tree for every value (~20k records/s). The record
template never changes, so this encoder precomputes every tag, every constant element (codes
from `TapCodes`) and the encodings of small integers, and per record only lays out the
variable parts with their shortest-form lengths.

It must produce exactly asn1tools' bytes: tests compare the two on every golden case and on
Hypothesis-generated records (tests/unit/codecs/test_fast_encoder.py). The layout below
follows the member order of the shipped TAP-0312 module; tags are IMPLICIT, except that a tag
on a CHOICE (ScuChargeableSubscriber [APPLICATION 430]) is always explicit (X.680 31.2.7),
so it wraps the chosen alternative's own tag.
"""

from __future__ import annotations

from ..ber import integer, length, tag, tlv
from ..header import TapCodes
from .record import ScuFields

_P = {"constructed": False}
_C = {"constructed": True}

T_SCU = tag(12, **_C)  # ServiceCentreUsage
T_BASIC = tag(191, **_C)  # ScuBasicInformation
T_CHARGEABLE = tag(430, **_C)  # ScuChargeableSubscriber (CHOICE: explicit)
T_GSM = tag(286, **_C)  # GsmChargeableSubscriber
T_MSISDN = tag(152, **_P)
T_PARTY_STATUS = tag(67, **_P)
T_NON_CHARGED = tag(402, **_P)  # NonChargedNumber
T_REC_ENTITY = tag(184, **_P)
T_CHARGE_INFO = tag(69, **_C)
T_CHARGED_ITEM = tag(66, **_P)
T_EXCHANGE_RATE = tag(105, **_P)
T_DETAIL_LIST = tag(64, **_C)
T_DETAIL = tag(63, **_C)
T_CHARGE_TYPE = tag(71, **_P)
T_CHARGE = tag(62, **_P)
T_CHARGEABLE_UNITS = tag(65, **_P)
T_CHARGED_UNITS = tag(68, **_P)
T_TAX_LIST = tag(214, **_C)
T_TAX_INFO = tag(213, **_C)
T_TAX_CODE = tag(212, **_P)
T_TAX_VALUE = tag(397, **_P)
T_TAXABLE = tag(398, **_P)
T_CHARGE_TYPE_GROUP = tag(192, **_C)  # ScuChargeType
T_MESSAGE_STATUS = tag(144, **_P)
T_PRIORITY = tag(170, **_P)
T_MESSAGE_TYPE = tag(145, **_P)
T_MESSAGE_DESCRIPTION_CODE = tag(141, **_P)
T_TIMESTAMPS = tag(193, **_C)
T_DEPOSIT = tag(88, **_C)
T_COMPLETION = tag(76, **_C)
T_LOCAL_TIME = tag(16, **_P)
T_OFFSET_CODE = tag(232, **_P)
T_CHARGING_POINT = tag(73, **_P)
T_OSI_LIST = tag(162, **_C)
T_OSI = tag(163, **_P)

_SHORT = [bytes([n]) for n in range(128)]
# Length octets of every size a record or a part of it can have (a record is a few hundred
# octets; parts holding free text could in theory be longer and fall back to `length`).
_LENGTHS = [length(n) for n in range(1 << 16)]
_LENGTH_LIMIT = 1 << 16
_INT_LIMIT = 256
# length + content octets of small INTEGERs (recording entity codes)
_INTS = [length(len(integer(v))) + integer(v) for v in range(_INT_LIMIT)]
_CACHE_LIMIT = 10_000  # entries per cache; caches are cleared when full, so memory is bounded


class ScuEncoder:
    """Encodes `ScuFields` as one `CallEventDetail` (serviceCentreUsage) TLV.

    Per record, only the variable parts are laid out: the MSISDN (at most 9 octets, so the
    subscriber CHOICE's lengths come from a table indexed by its size), the two 14-octet
    local timestamps (the ScuTimeStamps around them are ready-made per pair of offset codes),
    the SMSC code and the operator-specific items. Everything that depends only on values
    that repeat is built once and cached: the ScuChargeType per status, ChargeInformation per
    (charge, units, tax), chargedPartyStatus + nonChargedNumber per sender. Caches are
    bounded, so memory does not grow with the file.
    """

    __slots__ = ("_ints", "_party_status", "_charge_information_head", "_charge_type", "_tax_code",
                 "_charge_type_groups", "_charging_point", "_subscriber_heads", "_timestamp_parts", "_senders",
                 "_charge_informations")

    def __init__(self, codes: TapCodes) -> None:
        self._ints = _INTS

        def int_tlv(identifier: bytes, value: int) -> bytes:
            return tlv(identifier, integer(value))

        self._party_status = int_tlv(T_PARTY_STATUS, codes.charged_party_status)
        self._charge_information_head = tlv(T_CHARGED_ITEM, codes.charged_item.encode("ascii")) + int_tlv(
            T_EXCHANGE_RATE, codes.exchange_rate_code
        )
        self._charge_type = tlv(T_CHARGE_TYPE, codes.charge_type.encode("ascii"))
        self._tax_code = int_tlv(T_TAX_CODE, codes.tax_code)
        # ScuChargeType only varies with the message status: one ready TLV per status code.
        tail = (
            int_tlv(T_PRIORITY, codes.priority_code)
            + int_tlv(T_MESSAGE_TYPE, codes.message_type)
            + int_tlv(T_MESSAGE_DESCRIPTION_CODE, codes.message_description_code)
        )
        self._charge_type_groups = {
            code: tlv(T_CHARGE_TYPE_GROUP, int_tlv(T_MESSAGE_STATUS, code) + tail) for _, code in codes.message_status
        }
        self._charging_point = tlv(T_CHARGING_POINT, codes.charging_point.encode("ascii"))
        # chargeableSubscriber up to the MSISDN's content, per MSISDN length (1..9 octets).
        self._subscriber_heads = [b""] + [
            T_CHARGEABLE + _SHORT[n + 8] + T_GSM + _SHORT[n + 4] + T_MSISDN + _SHORT[n] for n in range(1, 10)
        ]
        self._timestamp_parts: dict[int, tuple[bytes, bytes, bytes]] = {}
        self._senders: dict[bytes, bytes] = {}
        self._charge_informations: dict[tuple[int, int, int, int, int], bytes] = {}

    def _timestamps(self, deposit_code: int, completion_code: int) -> tuple[bytes, bytes, bytes]:
        """The constant parts of ScuTimeStamps around the two local timestamps."""
        deposit = T_OFFSET_CODE + length(len(integer(deposit_code))) + integer(deposit_code)
        completion = T_OFFSET_CODE + length(len(integer(completion_code))) + integer(completion_code)
        local = T_LOCAL_TIME + b"\x0e"
        deposit_size = len(local) + 14 + len(deposit)
        completion_size = len(local) + 14 + len(completion)
        group_size = (
            len(T_DEPOSIT) + 1 + deposit_size + len(T_COMPLETION) + 1 + completion_size + len(self._charging_point)
        )
        parts = (
            T_TIMESTAMPS + _SHORT[group_size] + T_DEPOSIT + _SHORT[deposit_size] + local,
            deposit + T_COMPLETION + _SHORT[completion_size] + local,
            completion + self._charging_point,
        )
        self._timestamp_parts[(deposit_code << 16) | completion_code] = parts
        return parts

    def _charge_information(self, key: tuple[int, int, int, int, int]) -> bytes:
        """The ChargeInformation TLV for (charge, chargeable, charged units, tax, taxable)."""
        charge, chargeable_units, charged_units, tax_value, taxable_amount = key
        detail = tlv(
            T_DETAIL,
            self._charge_type
            + tlv(T_CHARGE, integer(charge))
            + tlv(T_CHARGEABLE_UNITS, integer(chargeable_units))
            + tlv(T_CHARGED_UNITS, integer(charged_units)),
        )
        tax = tlv(
            T_TAX_INFO,
            self._tax_code + tlv(T_TAX_VALUE, integer(tax_value)) + tlv(T_TAXABLE, integer(taxable_amount)),
        )
        value = tlv(
            T_CHARGE_INFO, self._charge_information_head + tlv(T_DETAIL_LIST, detail) + tlv(T_TAX_LIST, tax)
        )
        if len(self._charge_informations) >= _CACHE_LIMIT:
            self._charge_informations.clear()
        self._charge_informations[key] = value
        return value

    def encode(self, f: ScuFields) -> bytes:
        lengths = _LENGTHS
        (msisdn, sender, rec_entity_code, charge, chargeable_units, charged_units, tax_value, taxable_amount,
         message_status, deposit, deposit_code, completion, completion_code, operator_spec) = f

        # chargedPartyStatus + nonChargedNumber, per sender
        party = self._senders.get(sender)
        if party is None:
            party = self._party_status + tlv(T_NON_CHARGED, sender)
            if len(self._senders) >= _CACHE_LIMIT:
                self._senders.clear()
            self._senders[sender] = party
        basic_size = len(msisdn) + 12 + len(party)  # 12: the subscriber's three tags and lengths

        # Prices repeat: a file has few distinct (charge, units, tax) combinations.
        key = (charge, chargeable_units, charged_units, tax_value, taxable_amount)
        charge_information = self._charge_informations.get(key)
        if charge_information is None:
            charge_information = self._charge_information(key)

        parts = self._timestamp_parts.get((deposit_code << 16) | completion_code) or self._timestamps(
            deposit_code, completion_code
        )

        pieces = [
            T_BASIC,
            lengths[basic_size] if basic_size < _LENGTH_LIMIT else length(basic_size),
            self._subscriber_heads[len(msisdn)],
            msisdn,
            party,
            T_REC_ENTITY,
            self._ints[rec_entity_code] if rec_entity_code < _INT_LIMIT else _int(rec_entity_code),
            charge_information,
            self._charge_type_groups[message_status],
            parts[0],
            deposit,
            parts[1],
            completion,
            parts[2],
            T_OSI_LIST,
        ]
        # operatorSpecInformation: the usual three short items (cdr_id, chain_seq, record_type)
        # are laid out inline; anything else takes the general path.
        if len(operator_spec) == 3:
            a, b, c = operator_spec
            la, lb, lc = len(a), len(b), len(c)
            if la < 128 and lb < 128 and lc < 128:
                pieces += (lengths[la + lb + lc + 12], T_OSI, _SHORT[la], a, T_OSI, _SHORT[lb], b, T_OSI, _SHORT[lc], c)
            else:
                pieces += _osi(operator_spec)
        else:
            pieces += _osi(operator_spec)
        body = b"".join(pieces)
        size = len(body)
        return T_SCU + (lengths[size] if size < _LENGTH_LIMIT else length(size)) + body


def _osi(items: tuple[bytes, ...]) -> tuple[bytes, bytes]:
    """Length octets and content of operatorSpecInformation (4 = T_OSI + a short length)."""
    content = b"".join([T_OSI + length(len(item)) + item for item in items])
    return length(len(content)), content


def _int(value: int) -> bytes:
    content = integer(value)
    return length(len(content)) + content
