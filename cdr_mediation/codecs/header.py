"""What a file needs besides its records: the file header value object and the TAP code table.

`FileHeader` identifies one export file of one operator: who sends it to whom, its sequence
number, its cut-off and availability times, and the operator's accounting conventions (local
time zone, currency, TAP decimal places). Everything is an explicit value: nothing the codecs
encode comes from the wall clock, randomness or dict/set iteration order.

`TapCodes` holds the TD.57 code values that are bilateral agreement rather than data (which
recording-entity type an SMSC is, what a delivered message's status code is, ...). The
defaults are the ATRA_TAP_312_V1 profile (docs/codecs.md lists them); an operator whose
agreement differs overrides them in its export configuration.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from cdr_mediation.domain.cdr import DlrStatus

# ATRA_TAP_312_V1: delivery-receipt status to ScuChargeType.messageStatus.
DEFAULT_MESSAGE_STATUS_CODES: tuple[tuple[DlrStatus, int], ...] = (
    (DlrStatus.UNKNOWN, 0),
    (DlrStatus.DELIVERED, 1),
    (DlrStatus.UNDELIVERED, 2),
    (DlrStatus.EXPIRED, 3),
    (DlrStatus.REJECTED, 4),
)


@dataclasses.dataclass(frozen=True, slots=True)
class TapCodes:
    """TD.57 code values written into every ServiceCentreUsage record and the batch header."""

    # ScuBasicInformation.chargedPartyStatus: the MSISDN in the record is the recipient of
    # the message (terminating party).
    charged_party_status: int = 1
    # ChargeInformation.chargedItem: "E", an event-based charge (per message).
    charged_item: str = "E"
    # ChargeDetail.chargeType: "00", the total charge.
    charge_type: str = "00"
    # ChargeInformation.exchangeRateCode and AccountingInfo.currencyConversionInfo: amounts
    # are in the local currency, declared as the TAP currency with an exchange rate of 1.
    exchange_rate_code: int = 1
    # ScuChargeType items.
    priority_code: int = 0
    message_type: int = 1
    message_description_code: int = 1
    message_description: str = "A2P SMS"
    message_status: tuple[tuple[DlrStatus, int], ...] = DEFAULT_MESSAGE_STATUS_CODES
    # ScuTimeStamps.chargingPoint: "C", charged on completion (the delivery receipt).
    charging_point: str = "C"
    # RecEntityInformation.recEntityType of an SMSC.
    rec_entity_type: int = 2
    # AccountingInfo.taxation entry referenced by every record's TaxInformation.
    tax_code: int = 1
    tax_type: str = "01"
    tax_rate: str | None = None  # NumberString SIZE(7): rate x 10^5, e.g. "1000000" = 10 %

    def message_status_code(self, status: DlrStatus) -> int | None:
        for known, code in self.message_status:
            if known == status:
                return code
        return None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "TapCodes":
        """Build from an operator's configuration mapping (unknown keys are an error)."""
        values = dict(config)
        if "message_status" in values:
            mapping = values["message_status"]
            values["message_status"] = tuple(
                (DlrStatus(status), int(code)) for status, code in sorted(mapping.items())
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown TAP code setting(s): {', '.join(unknown)}")
        return cls(**values)


@dataclasses.dataclass(frozen=True, slots=True)
class FileHeader:
    """One export file of one operator (validated by `tap.header_groups.validate_header`).

    `time_zone` is the operator's local time for TAP timestamps: a fixed offset such as
    ``"+0430"`` (preferred: evidence then never depends on the tz database version) or an IANA
    zone name such as ``"Europe/Berlin"`` when the local time has daylight saving.
    `currency_exponent` is the ISO 4217 minor-unit exponent of `currency`, which `Cdr`
    amounts are counted in; `tap_decimal_places` is the TAP batch's AbsoluteAmount scale.
    """

    operator_id: str
    sender: str  # TADIG code of the sending network (the operator)
    recipient: str  # TADIG code of the recipient (the regulator's agreed code)
    file_sequence_number: int  # 1..99999
    transfer_cut_off: dt.datetime  # aware; no record's done_at may be later
    file_available: dt.datetime  # aware
    time_zone: str
    currency: str
    currency_exponent: int
    tap_decimal_places: int
    file_creation: dt.datetime | None = None  # aware; omitted from the file when None
    rap_file_sequence_number: int | None = None  # set when resubmitting after a RAP
    test_data: bool = False  # fileTypeIndicator "T"
    codes: TapCodes = TapCodes()
