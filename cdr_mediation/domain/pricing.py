"""Pricing: which rate applies to a DLR, and what the CDR is charged.

Snapshot file format ``cdr-mediation.pricing.v1`` (UTF-8 JSON; the caller reads the file or the
compacted topic and passes the bytes to `load_snapshot`)::

    {
      "format": "cdr-mediation.pricing.v1",
      "version": "2026-03-25.1",                  # id of this snapshot (logs, metrics)
      "published_at": "2026-03-25T09:00:00Z",     # when billing-service published it
      "operators": {
        "op-a": {
          "currency": "EUR",                      # ISO 4217; one currency per operator
          "rates": [
            {"rate_id": "op-a/default/2026-01",   # immutable id -> Cdr.pricing_version
             "effective_from": "2026-01-01T00:00:00Z",
             "unit_price_minor": 5,               # per segment, integer minor units
             "tax_rate_bp": 2000},                # basis points: 2000 = 20.00 %
            {"rate_id": "op-a/tenant-7/2026-02", "tenant_id": "tenant-7",
             "effective_from": "2026-02-01T00:00:00+01:00",
             "unit_price_minor": 4, "tax_rate_bp": 2000}
          ]
        }
      }
    }

Reading is strict (unknown members, duplicate names, wrong types, out-of-range numbers,
duplicate ``rate_id`` or two rates for the same (operator, tenant, effective_from) all fail).

**Which rate.** A DLR is priced at its ``done_at`` (event time, never the wall clock). A rate is in
force from its ``effective_from`` until the next ``effective_from`` of the same (operator,
tenant); there is no end date. For (operator, tenant, t): the tenant's own rate in force at t if
there is one, else the operator default (no ``tenant_id``) in force at t, else no price (the DLR
goes to the dead-letter topic with `PricingReason`). Comparisons are on UTC instants truncated
to milliseconds — the same ``done_at`` the CDR carries, so an auditor can redo the lookup.

**Charge.** ``amount = unit_price_minor × segments`` if billable, else 0; ``tax = amount ×
tax_rate_bp / 10000`` rounded to the nearest minor unit, halves away from zero ("commercial"
rounding, as invoicing practice requires; amounts are never negative here, so this is half-up).
Only DELIVERED is billable (delivery-based billing): UNDELIVERED, EXPIRED and REJECTED were not
delivered, and UNKNOWN cannot be shown to have been. Non-billable CDRs still name the rate and
its unit price, with zero amount and tax. Integer arithmetic only.

**Immutability — why rate ids, not snapshot versions, go into CDRs.** A CDR records the
``rate_id`` it was priced with. Rates are immutable once published, and a new snapshot may only
*add* rates that take effect after it is published (except for an operator that had no rates at
all, whose DLRs could only have been dead-lettered). `check_successor` enforces this. Then the
price of a DLR depends only on the DLR, whichever snapshot a worker holds — which is what keeps
a re-processed batch byte-identical to the first attempt and a replay identical to the original.
Operational corollary: publish a rate before its ``effective_from`` by more than the time a
snapshot takes to reach every ingest worker.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import enum
import re
from typing import Any, Mapping

from cdr_mediation.domain.cdr import DlrStatus
from cdr_mediation.domain.dlr import PATTERNS, parse_rfc3339
from cdr_mediation.domain.strict_json import StrictJsonError, loads_strict

SNAPSHOT_FORMAT = "cdr-mediation.pricing.v1"
BILLABLE_STATUSES = frozenset({DlrStatus.DELIVERED})
BASIS_POINTS = 10_000
# 1e9 minor units × 255 segments stays far inside ±(2**53 - 1), the exact-integer range of JCS.
MAX_UNIT_PRICE_MINOR = 1_000_000_000

_OPERATOR_ID = re.compile(PATTERNS["operator_id"])
_TENANT_ID = re.compile(PATTERNS["tenant_id"])
_RATE_ID = re.compile(r"[A-Za-z0-9._:/-]{1,128}")
_VERSION = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_RATE_MEMBERS = frozenset({"rate_id", "effective_from", "unit_price_minor", "tax_rate_bp"})


class PricingReason(str, enum.Enum):
    """Why a DLR has no price. Values are stable DLQ reasons / metric labels."""

    NO_PRICE_FOR_OPERATOR = "no_price_for_operator"
    NO_PRICE_AT_TIME = "no_price_at_time"


class NoPrice(LookupError):
    """No rate applies to the DLR; `reason_code` is a `PricingReason` value."""

    def __init__(self, reason_code: PricingReason | str, detail: str) -> None:
        self.reason_code = PricingReason(reason_code).value
        self.detail = detail
        super().__init__(f"{self.reason_code}: {detail}")


class InvalidPricingSnapshot(ValueError):
    """The snapshot bytes do not follow ``cdr-mediation.pricing.v1``."""


class PricingSuccessionError(ValueError):
    """A new snapshot would change the price of DLRs that may already have been priced."""


@dataclasses.dataclass(frozen=True, slots=True)
class Rate:
    rate_id: str
    operator_id: str
    tenant_id: str | None  # None: the operator's default rate
    effective_from: dt.datetime  # aware UTC, millisecond precision
    unit_price_minor: int
    tax_rate_bp: int
    currency: str


@dataclasses.dataclass(frozen=True, slots=True)
class Charge:
    """The money fields of a CDR."""

    billable: bool
    unit_price_minor: int
    amount_minor: int
    tax_minor: int
    currency: str
    pricing_version: str  # the rate_id


def is_billable(status: DlrStatus) -> bool:
    return status in BILLABLE_STATUSES


def tax_minor(amount_minor: int, tax_rate_bp: int) -> int:
    """``amount × rate / 10000`` to the nearest minor unit, halves away from zero."""
    quotient, remainder = divmod(abs(amount_minor) * tax_rate_bp, BASIS_POINTS)
    if 2 * remainder >= BASIS_POINTS:
        quotient += 1
    return quotient if amount_minor >= 0 else -quotient


def charge(rate: Rate, status: DlrStatus, segments: int) -> Charge:
    billable, amount, tax = amounts(rate, status, segments)
    return Charge(
        billable=billable,
        unit_price_minor=rate.unit_price_minor,
        amount_minor=amount,
        tax_minor=tax,
        currency=rate.currency,
        pricing_version=rate.rate_id,
    )


def amounts(rate: Rate, status: DlrStatus, segments: int) -> tuple[bool, int, int]:
    """(billable, amount_minor, tax_minor) of `charge`, without building a `Charge` (the
    projection reads the other fields from the rate itself; one object less per DLR)."""
    billable = status in BILLABLE_STATUSES
    amount = rate.unit_price_minor * segments if billable else 0
    return billable, amount, tax_minor(amount, rate.tax_rate_bp)


class PricingSnapshot:
    """An immutable, indexed pricing snapshot. Build it with `load_snapshot`."""

    __slots__ = ("version", "published_at", "currencies", "rates", "_timelines")

    def __init__(
        self,
        version: str,
        published_at: dt.datetime,
        currencies: Mapping[str, str],
        rates: tuple[Rate, ...],
    ) -> None:
        self.version = version
        self.published_at = published_at
        self.currencies = dict(currencies)
        # Sorted, so nothing downstream depends on the order of the file.
        self.rates = tuple(
            sorted(rates, key=lambda r: (r.operator_id, r.tenant_id or "", r.effective_from))
        )
        timelines: dict[tuple[str, str | None], tuple[list[dt.datetime], list[Rate]]] = {}
        for rate in self.rates:
            times, entries = timelines.setdefault((rate.operator_id, rate.tenant_id), ([], []))
            times.append(rate.effective_from)
            entries.append(rate)
        self._timelines = timelines

    def _in_force(self, operator_id: str, tenant_id: str | None, at: dt.datetime) -> Rate | None:
        timeline = self._timelines.get((operator_id, tenant_id))
        if timeline is None:
            return None
        times, entries = timeline
        index = bisect.bisect_right(times, at) - 1
        return entries[index] if index >= 0 else None

    def rate_for(self, operator_id: str, tenant_id: str, at: dt.datetime) -> Rate:
        """The rate in force for (operator, tenant) at `at` (aware); raises `NoPrice`."""
        if operator_id not in self.currencies:
            raise NoPrice(
                PricingReason.NO_PRICE_FOR_OPERATOR,
                f"operator {operator_id!r} is not in pricing snapshot {self.version!r}",
            )
        rate = self._in_force(operator_id, tenant_id, at) or self._in_force(operator_id, None, at)
        if rate is None:
            raise NoPrice(
                PricingReason.NO_PRICE_AT_TIME,
                f"no rate in force for operator {operator_id!r}, tenant {tenant_id!r} at "
                f"{at.isoformat()} in pricing snapshot {self.version!r}",
            )
        return rate

    def __repr__(self) -> str:
        return f"PricingSnapshot(version={self.version!r}, rates={len(self.rates)})"


def _fail(detail: str) -> InvalidPricingSnapshot:
    return InvalidPricingSnapshot(detail)


def _expect_keys(
    obj: Any, where: str, required: frozenset[str], optional: frozenset[str] = frozenset()
) -> None:
    if type(obj) is not dict:
        raise _fail(f"{where} must be an object")
    missing = sorted(required - obj.keys())
    if missing:
        raise _fail(f"{where} lacks {missing[0]!r}")
    unknown = sorted(obj.keys() - required - optional)
    if unknown:
        raise _fail(f"{where} has unknown member {unknown[0]!r}")


def _text(obj: dict[str, Any], key: str, pattern: re.Pattern[str], where: str) -> str:
    value = obj[key]
    if type(value) is not str or pattern.fullmatch(value) is None:
        raise _fail(f"{where}.{key} must be a string matching {pattern.pattern}")
    return value


def _int(obj: dict[str, Any], key: str, low: int, high: int, where: str) -> int:
    value = obj[key]
    if type(value) is not int or not low <= value <= high:
        raise _fail(f"{where}.{key} must be an integer in {low}..{high}")
    return value


def _time(obj: dict[str, Any], key: str, where: str) -> dt.datetime:
    value = obj[key]
    if type(value) is not str:
        raise _fail(f"{where}.{key} must be an RFC 3339 string")
    try:
        return parse_rfc3339(value)
    except ValueError as exc:
        raise _fail(f"{where}.{key} is {exc}") from None


def load_snapshot(raw: bytes) -> PricingSnapshot:
    """Parse and validate ``cdr-mediation.pricing.v1`` bytes."""
    try:
        doc = loads_strict(raw)
    except StrictJsonError as exc:
        raise _fail(f"snapshot is not strict JSON: {exc}") from None
    _expect_keys(doc, "snapshot", frozenset({"format", "version", "published_at", "operators"}))
    if doc["format"] != SNAPSHOT_FORMAT:
        raise _fail(f"snapshot.format must be {SNAPSHOT_FORMAT!r}")
    version = _text(doc, "version", _VERSION, "snapshot")
    published_at = _time(doc, "published_at", "snapshot")
    operators = doc["operators"]
    if type(operators) is not dict:
        raise _fail("snapshot.operators must be an object")

    currencies: dict[str, str] = {}
    rates: list[Rate] = []
    rate_ids: set[str] = set()
    slots: set[tuple[str, str | None, dt.datetime]] = set()
    for operator_id, operator in operators.items():
        where = f"operators[{operator_id!r}]"
        if _OPERATOR_ID.fullmatch(operator_id) is None:
            raise _fail(f"{where}: operator id must match {_OPERATOR_ID.pattern}")
        _expect_keys(operator, where, frozenset({"currency", "rates"}))
        currency = _text(operator, "currency", _CURRENCY, where)
        if type(operator["rates"]) is not list or not operator["rates"]:
            raise _fail(f"{where}.rates must be a non-empty array")
        currencies[operator_id] = currency
        for index, entry in enumerate(operator["rates"]):
            at = f"{where}.rates[{index}]"
            _expect_keys(entry, at, _RATE_MEMBERS, frozenset({"tenant_id"}))
            rate_id = _text(entry, "rate_id", _RATE_ID, at)
            tenant_id = entry.get("tenant_id")
            if tenant_id is not None:
                tenant_id = _text(entry, "tenant_id", _TENANT_ID, at)
            rate = Rate(
                rate_id=rate_id,
                operator_id=operator_id,
                tenant_id=tenant_id,
                effective_from=_time(entry, "effective_from", at),
                unit_price_minor=_int(entry, "unit_price_minor", 0, MAX_UNIT_PRICE_MINOR, at),
                tax_rate_bp=_int(entry, "tax_rate_bp", 0, BASIS_POINTS, at),
                currency=currency,
            )
            if rate_id in rate_ids:
                raise _fail(f"{at}: rate_id {rate_id!r} is used twice")
            slot = (operator_id, tenant_id, rate.effective_from)
            if slot in slots:
                raise _fail(f"{at}: a second rate for the same tenant and effective_from")
            rate_ids.add(rate_id)
            slots.add(slot)
            rates.append(rate)
    return PricingSnapshot(version, published_at, currencies, tuple(rates))


def check_successor(previous: PricingSnapshot, candidate: PricingSnapshot) -> None:
    """Refuse a snapshot that could re-price DLRs priced under `previous`.

    Rules: (1) it is published no earlier than `previous`; (2) every previous rate is present and
    unchanged; (3) no operator changes currency; (4) a rate new in `candidate` takes effect no
    earlier than `candidate.published_at`, unless its operator had no rates in `previous`.
    """
    if candidate.published_at < previous.published_at:
        raise PricingSuccessionError(
            f"snapshot {candidate.version!r} is published before {previous.version!r}"
        )
    candidate_rates = {rate.rate_id: rate for rate in candidate.rates}
    for rate in previous.rates:
        successor = candidate_rates.get(rate.rate_id)
        if successor is None:
            raise PricingSuccessionError(f"rate {rate.rate_id!r} was removed")
        if successor != rate:
            raise PricingSuccessionError(f"rate {rate.rate_id!r} was changed")
    for operator_id, currency in previous.currencies.items():
        if candidate.currencies.get(operator_id, currency) != currency:
            raise PricingSuccessionError(f"operator {operator_id!r} changed currency")
    previous_ids = {rate.rate_id for rate in previous.rates}
    for rate in candidate.rates:
        if rate.rate_id in previous_ids or rate.operator_id not in previous.currencies:
            continue
        if rate.effective_from < candidate.published_at:
            raise PricingSuccessionError(
                f"new rate {rate.rate_id!r} takes effect before the snapshot is published"
            )
