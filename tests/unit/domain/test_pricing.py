"""Pricing snapshot: loading, rate in force at done_at, billable rule, tax rounding, succession."""

from __future__ import annotations

import copy
import datetime as dt
import json
import random
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdr_mediation.domain.cdr import DlrStatus
from cdr_mediation.domain.pricing import (
    InvalidPricingSnapshot,
    NoPrice,
    PricingSnapshot,
    PricingSuccessionError,
    charge,
    check_successor,
    load_snapshot,
    tax_minor,
)

UTC = dt.timezone.utc


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def load(doc: dict[str, Any]) -> PricingSnapshot:
    return load_snapshot(json.dumps(doc).encode())


class TestRateInForce:
    @pytest.mark.parametrize(
        ("moment", "rate_id"),
        [
            ("2026-01-01T00:00:00", "op-a/default/2026-01"),  # exactly at effective_from
            ("2026-06-30T23:59:59.999", "op-a/default/2026-01"),  # 1 ms before the change
            # effective_from "2026-07-01T02:00:00+02:00" is midnight UTC
            ("2026-07-01T00:00:00", "op-a/default/2026-07"),
            ("2030-01-01T00:00:00", "op-a/default/2026-07"),  # no end date
        ],
    )
    def test_default_rate_follows_the_timeline(
        self, pricing: PricingSnapshot, moment: str, rate_id: str
    ) -> None:
        assert pricing.rate_for("op-a", "tenant-1", at(moment)).rate_id == rate_id

    def test_tenant_rate_overrides_the_default_while_in_force(
        self, pricing: PricingSnapshot
    ) -> None:
        assert pricing.rate_for("op-a", "tenant-7", at("2026-03-01T00:00:00")).rate_id == (
            "op-a/tenant-7/2026-03"
        )
        # The tenant rate has no successor, so it outlives the default's July change.
        assert pricing.rate_for("op-a", "tenant-7", at("2026-08-01T00:00:00")).rate_id == (
            "op-a/tenant-7/2026-03"
        )

    def test_before_its_own_rate_a_tenant_pays_the_default(self, pricing: PricingSnapshot) -> None:
        assert pricing.rate_for("op-a", "tenant-7", at("2026-02-28T23:59:59.999")).rate_id == (
            "op-a/default/2026-01"
        )

    def test_unknown_operator_has_no_price(self, pricing: PricingSnapshot) -> None:
        with pytest.raises(NoPrice) as err:
            pricing.rate_for("op-zz", "tenant-1", at("2026-04-01T00:00:00"))
        assert err.value.reason_code == "no_price_for_operator"

    def test_before_the_first_rate_there_is_no_price(self, pricing: PricingSnapshot) -> None:
        with pytest.raises(NoPrice) as err:
            pricing.rate_for("op-late", "tenant-1", at("2026-12-31T23:59:59.999"))
        assert err.value.reason_code == "no_price_at_time"
        assert "op-late" in err.value.detail and "2026-02-15.1" in err.value.detail

    def test_currency_is_per_operator(self, pricing: PricingSnapshot) -> None:
        assert pricing.rate_for("op-b", "t", at("2026-04-01T00:00:00")).currency == "USD"
        assert pricing.rate_for("op-a", "t", at("2026-04-01T00:00:00")).currency == "EUR"

    def test_order_of_rates_in_the_file_does_not_matter(self, pricing_doc: dict) -> None:
        shuffled = copy.deepcopy(pricing_doc)
        for operator in shuffled["operators"].values():
            random.Random(7).shuffle(operator["rates"])
        shuffled["operators"] = dict(reversed(list(shuffled["operators"].items())))
        a, b = load(pricing_doc), load(shuffled)
        assert a.rates == b.rates
        for moment in ("2026-02-01T00:00:00", "2026-03-05T00:00:00", "2026-07-05T00:00:00"):
            for tenant in ("tenant-1", "tenant-7"):
                when = at(moment)
                assert a.rate_for("op-a", tenant, when) == b.rate_for("op-a", tenant, when)


class TestCharge:
    def test_delivered_is_billable_per_segment(self, pricing: PricingSnapshot) -> None:
        rate = pricing.rate_for("op-a", "tenant-1", at("2026-04-01T00:00:00"))
        money = charge(rate, DlrStatus.DELIVERED, 3)
        assert (money.billable, money.unit_price_minor, money.amount_minor, money.tax_minor) == (
            True, 5, 15, 3,
        )
        assert (money.currency, money.pricing_version) == ("EUR", "op-a/default/2026-01")

    @pytest.mark.parametrize(
        "status",
        [DlrStatus.UNDELIVERED, DlrStatus.EXPIRED, DlrStatus.REJECTED, DlrStatus.UNKNOWN],
    )
    def test_other_statuses_cost_nothing_but_name_the_rate(
        self, pricing: PricingSnapshot, status: DlrStatus
    ) -> None:
        rate = pricing.rate_for("op-a", "tenant-1", at("2026-04-01T00:00:00"))
        money = charge(rate, status, 3)
        assert (money.billable, money.amount_minor, money.tax_minor) == (False, 0, 0)
        assert (money.unit_price_minor, money.pricing_version) == (5, "op-a/default/2026-01")


class TestTaxRounding:
    @pytest.mark.parametrize(
        ("amount", "bp", "tax"),
        [
            (10, 2000, 2),  # exact
            (5, 1000, 1),  # 0.5 -> 1 (half up)
            (15, 1000, 2),  # 1.5 -> 2
            (25, 1000, 3),  # 2.5 -> 3 (half-even would give 2)
            (4, 1000, 0),  # 0.4 -> 0
            (6, 1000, 1),  # 0.6 -> 1
            (7, 2100, 1),  # 1.47 -> 1
            (0, 2000, 0),
            (123, 0, 0),
            (123, 10000, 123),
            (-5, 1000, -1),  # halves away from zero, symmetric for credits
            (-4, 1000, 0),
        ],
    )
    def test_half_up_to_the_minor_unit(self, amount: int, bp: int, tax: int) -> None:
        assert tax_minor(amount, bp) == tax

    @settings(max_examples=500, deadline=None)
    @given(st.integers(-(10**12), 10**12), st.integers(0, 10_000))
    def test_matches_exact_rational_rounding(self, amount: int, bp: int) -> None:
        exact = Fraction(abs(amount) * bp, 10_000)
        half_up = int(exact + Fraction(1, 2))  # floor(x + 1/2) for x >= 0
        assert tax_minor(amount, bp) == (half_up if amount >= 0 else -half_up)


def _rate(doc: dict, operator: str = "op-a", index: int = 0) -> dict:
    return doc["operators"][operator]["rates"][index]


class TestSnapshotValidation:
    @pytest.mark.parametrize(
        ("mutate", "message"),
        [
            (lambda d: d.update(format="pricing.v2"), "format"),
            (lambda d: d.update(extra=1), "unknown member 'extra'"),
            (lambda d: d.pop("published_at"), "lacks 'published_at'"),
            (lambda d: d.update(published_at="2026-02-15T09:00:00"), "published_at"),
            (lambda d: d.update(version=""), "version"),
            (lambda d: d["operators"].update({"op.x": d["operators"]["op-b"]}), "operator id"),
            (lambda d: d["operators"]["op-a"].update(currency="eur"), "currency"),
            (lambda d: d["operators"]["op-a"].update(rates=[]), "non-empty"),
            (lambda d: _rate(d).update(unit_price_minor=5.0), "unit_price_minor"),
            (lambda d: _rate(d).update(unit_price_minor=-1), "unit_price_minor"),
            (lambda d: _rate(d).update(unit_price_minor=True), "unit_price_minor"),
            (lambda d: _rate(d).update(tax_rate_bp=10_001), "tax_rate_bp"),
            (lambda d: _rate(d).update(effective_from="2026-01-01"), "effective_from"),
            (lambda d: _rate(d).update(price=5), "unknown member 'price'"),
            (lambda d: _rate(d).update(tenant_id="bad tenant"), "tenant_id"),
            (lambda d: _rate(d, "op-b").update(rate_id="op-a/default/2026-01"), "used twice"),
            (lambda d: _rate(d, "op-a", 1).update(effective_from="2026-01-01T01:00:00+01:00"),
             "same tenant and effective_from"),
        ],
    )
    def test_malformed_snapshots_are_refused(
        self, pricing_doc: dict, mutate: Any, message: str
    ) -> None:
        doc = copy.deepcopy(pricing_doc)
        mutate(doc)
        with pytest.raises(InvalidPricingSnapshot, match=message.replace(".", r"\.")):
            load(doc)

    def test_duplicate_json_member_is_refused(self) -> None:
        raw = b'{"format": "cdr-mediation.pricing.v1", "format": "cdr-mediation.pricing.v1"}'
        with pytest.raises(InvalidPricingSnapshot, match="duplicate_key"):
            load_snapshot(raw)

    def test_loaded_snapshot_exposes_version_and_publication(
        self, pricing: PricingSnapshot
    ) -> None:
        assert pricing.version == "2026-02-15.1"
        assert pricing.published_at == dt.datetime(2026, 2, 15, 9, tzinfo=UTC)
        assert pricing.currencies == {"op-a": "EUR", "op-b": "USD", "op-late": "EUR"}


class TestSuccession:
    def _successor(self, pricing_doc: dict, **top: Any) -> dict:
        doc = copy.deepcopy(pricing_doc)
        doc.update(version="2026-05-01.1", published_at="2026-05-01T09:00:00Z", **top)
        return doc

    def test_adding_a_future_rate_is_accepted(self, pricing_doc: dict) -> None:
        doc = self._successor(pricing_doc)
        doc["operators"]["op-b"]["rates"].append(
            {"rate_id": "op-b/default/2026-09", "effective_from": "2026-09-01T00:00:00Z",
             "unit_price_minor": 8, "tax_rate_bp": 0})
        check_successor(load(pricing_doc), load(doc))

    def test_a_new_operator_may_be_priced_retroactively(self, pricing_doc: dict) -> None:
        # Its earlier DLRs could only have been dead-lettered for lack of a price.
        doc = self._successor(pricing_doc)
        doc["operators"]["op-new"] = {"currency": "GBP", "rates": [
            {"rate_id": "op-new/default/2026", "effective_from": "2026-01-01T00:00:00Z",
             "unit_price_minor": 2, "tax_rate_bp": 2000}]}
        check_successor(load(pricing_doc), load(doc))

    @pytest.mark.parametrize(
        ("mutate", "message"),
        [
            (lambda d: _rate(d).update(unit_price_minor=9), "was changed"),
            (lambda d: _rate(d).update(tax_rate_bp=1900), "was changed"),
            (lambda d: d["operators"]["op-a"]["rates"].pop(2), "was removed"),
            (lambda d: d["operators"].pop("op-late"), "was removed"),
            (lambda d: d["operators"]["op-b"].update(currency="EUR"), "changed"),
            (lambda d: d["operators"]["op-a"]["rates"].append(
                {"rate_id": "op-a/tenant-9/2026-04", "tenant_id": "tenant-9",
                 "effective_from": "2026-04-01T00:00:00Z", "unit_price_minor": 1,
                 "tax_rate_bp": 2000}), "before the snapshot is published"),
            (lambda d: d.update(published_at="2026-02-01T00:00:00Z"), "published before"),
        ],
    )
    def test_changes_that_could_reprice_past_dlrs_are_refused(
        self, pricing_doc: dict, mutate: Any, message: str
    ) -> None:
        doc = self._successor(pricing_doc)
        mutate(doc)
        with pytest.raises(PricingSuccessionError, match=message):
            check_successor(load(pricing_doc), load(doc))
