"""DLR -> CDR projection: field mapping, cdr_id, pricing by done_at, billable rule, time zones."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any, Callable

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from cdr_mediation.codecs.canonical_json import is_fast_path_value
from cdr_mediation.domain.cdr import Cdr, DlrStatus, RecordType
from cdr_mediation.domain.chain import ChainHead, link
from cdr_mediation.domain.dlr import InvalidDlr, parse_dlr
from cdr_mediation.domain.pricing import NoPrice, PricingSnapshot
from cdr_mediation.domain.projection import CDR_ID_NAMESPACE, cdr_id_for, project

MakeDlr = Callable[..., bytes]


def project_raw(raw: bytes, pricing: PricingSnapshot) -> Cdr:
    return project(parse_dlr(raw), pricing)


class TestFieldMapping:
    def test_reference_dlr_becomes_this_exact_cdr(
        self, make_dlr: MakeDlr, pricing: PricingSnapshot
    ) -> None:
        cdr = project_raw(make_dlr(segments=2), pricing)
        assert cdr == Cdr(
            record_type=RecordType.CDR,
            cdr_id="4df915ca-f22c-5214-9542-631074267f2a",  # see TestCdrId
            dlr_id="0f8fad5b-d9cb-469f-a165-70867728950e",
            message_id="msg-000001",
            tenant_id="tenant-1",
            operator_id="op-a",
            sender_id="ACME",
            msisdn="+4915123456789",
            status=DlrStatus.DELIVERED,
            submitted_at="2026-04-10T10:15:00.123Z",
            done_at="2026-04-10T10:15:03.456Z",
            segments=2,
            billable=True,
            unit_price_minor=5,
            amount_minor=10,
            tax_minor=2,
            currency="EUR",
            pricing_version="op-a/default/2026-01",
            error_code=None,
            smsc_id="smsc-fra-1",
            chain_seq=0,
            prev_hash="",
        )

    def test_projection_is_unlinked_until_chained(
        self, make_dlr: MakeDlr, pricing: PricingSnapshot
    ) -> None:
        cdr = project_raw(make_dlr(), pricing)
        assert (cdr.chain_seq, cdr.prev_hash) == (0, "")
        linked, _ = link(ChainHead.genesis("op-a"), cdr)
        assert (linked.chain_seq, linked.prev_hash) == (1, "0" * 64)

    def test_adjustment_fields_are_null_on_a_cdr(
        self, make_dlr: MakeDlr, pricing: PricingSnapshot
    ) -> None:
        entry = project_raw(make_dlr(), pricing).to_entry()
        assert (entry["record_type"], entry["ref_cdr_id"], entry["ticket_ref"], entry["actor"]) == (
            "CDR", None, None, None,
        )

    def test_error_code_is_carried(self, make_dlr: MakeDlr, pricing: PricingSnapshot) -> None:
        cdr = project_raw(make_dlr(status="UNDELIVERED", error_code="0x0000000B"), pricing)
        assert cdr.error_code == "0x0000000B"

    def test_extension_members_never_reach_the_cdr(
        self, make_dlr: MakeDlr, pricing: PricingSnapshot
    ) -> None:
        plain = project_raw(make_dlr(), pricing)
        extended = project_raw(make_dlr(x_trace="abc", x_raw={"stat": "DELIVRD"}), pricing)
        assert plain == extended


class TestStatusAndSegments:
    @pytest.mark.parametrize(
        ("status", "billable", "amount", "tax"),
        [
            ("DELIVERED", True, 15, 3),
            ("UNDELIVERED", False, 0, 0),
            ("EXPIRED", False, 0, 0),
            ("REJECTED", False, 0, 0),
            ("UNKNOWN", False, 0, 0),
        ],
    )
    def test_each_status(
        self, make_dlr: MakeDlr, pricing: PricingSnapshot,
        status: str, billable: bool, amount: int, tax: int,
    ) -> None:
        cdr = project_raw(make_dlr(status=status, segments=3), pricing)
        assert cdr.status == DlrStatus(status)
        assert (cdr.billable, cdr.unit_price_minor, cdr.amount_minor, cdr.tax_minor) == (
            billable, 5, amount, tax,
        )

    def test_multi_segment_message_is_charged_per_segment(
        self, make_dlr: MakeDlr, pricing: PricingSnapshot
    ) -> None:
        cdr = project_raw(make_dlr(segments=7), pricing)
        assert (cdr.segments, cdr.amount_minor, cdr.tax_minor) == (7, 35, 7)

    def test_maximum_segments(self, make_dlr: MakeDlr, pricing: PricingSnapshot) -> None:
        cdr = project_raw(make_dlr(segments=255, done_at="2026-07-02T00:00:00Z"), pricing)
        # 255 x 6 = 1530; 21 % of 1530 = 321.3 -> 321
        assert (cdr.amount_minor, cdr.tax_minor, cdr.pricing_version) == (
            1530, 321, "op-a/default/2026-07",
        )


class TestPricingLookup:
    def test_tenant_specific_price(self, make_dlr: MakeDlr, pricing: PricingSnapshot) -> None:
        cdr = project_raw(make_dlr(tenant_id="tenant-7", segments=2), pricing)
        assert (cdr.unit_price_minor, cdr.amount_minor, cdr.pricing_version) == (
            4, 8, "op-a/tenant-7/2026-03",
        )

    def test_currency_comes_from_the_operator(
        self, make_dlr: MakeDlr, pricing: PricingSnapshot
    ) -> None:
        cdr = project_raw(make_dlr(operator_id="op-b", segments=2), pricing)
        assert (cdr.currency, cdr.amount_minor, cdr.tax_minor) == ("USD", 14, 0)

    def test_priced_at_done_at_not_at_submission(
        self, make_dlr: MakeDlr, pricing: PricingSnapshot
    ) -> None:
        cdr = project_raw(
            make_dlr(submitted_at="2026-06-30T23:59:50Z", done_at="2026-07-01T00:00:05Z"),
            pricing,
        )
        assert cdr.pricing_version == "op-a/default/2026-07"

    def test_missing_price_for_operator_is_a_typed_error(
        self, make_dlr: MakeDlr, pricing: PricingSnapshot
    ) -> None:
        with pytest.raises(NoPrice) as err:
            project_raw(make_dlr(operator_id="op-unpriced"), pricing)
        assert err.value.reason_code == "no_price_for_operator"

    def test_missing_price_at_done_at_is_a_typed_error(
        self, make_dlr: MakeDlr, pricing: PricingSnapshot
    ) -> None:
        with pytest.raises(NoPrice) as err:
            project_raw(make_dlr(operator_id="op-late"), pricing)
        assert err.value.reason_code == "no_price_at_time"


class TestTimeZones:
    def test_offset_times_are_rendered_in_utc(
        self, make_dlr: MakeDlr, pricing: PricingSnapshot
    ) -> None:
        cdr = project_raw(
            make_dlr(submitted_at="2026-04-10T15:45:00.5+05:30",
                     done_at="2026-04-10T03:15:01-07:00"),
            pricing,
        )
        assert (cdr.submitted_at, cdr.done_at) == (
            "2026-04-10T10:15:00.500Z", "2026-04-10T10:15:01.000Z",
        )

    def test_local_date_before_a_rate_change_can_be_utc_after_it(
        self, make_dlr: MakeDlr, pricing: PricingSnapshot
    ) -> None:
        # 2026-06-30T23:30-02:00 is 2026-07-01T01:30Z: the July rate applies.
        cdr = project_raw(
            make_dlr(submitted_at="2026-06-30T23:29:00-02:00", done_at="2026-06-30T23:30:00-02:00"),
            pricing,
        )
        assert cdr.done_at == "2026-07-01T01:30:00.000Z"
        assert cdr.pricing_version == "op-a/default/2026-07"

    def test_local_date_after_a_rate_change_can_be_utc_before_it(
        self, make_dlr: MakeDlr, pricing: PricingSnapshot
    ) -> None:
        # 2026-07-01T01:59:59.999+02:00 is 23:59:59.999Z on 30 June: the January rate applies.
        cdr = project_raw(
            make_dlr(submitted_at="2026-07-01T01:59:00+02:00",
                     done_at="2026-07-01T01:59:59.999+02:00"),
            pricing,
        )
        assert cdr.pricing_version == "op-a/default/2026-01"

    def test_sub_millisecond_digits_are_truncated_not_rounded(
        self, make_dlr: MakeDlr, pricing: PricingSnapshot
    ) -> None:
        cdr = project_raw(make_dlr(done_at="2026-04-10T10:15:03.999999999Z"), pricing)
        assert cdr.done_at == "2026-04-10T10:15:03.999Z"

    def test_same_instant_in_any_offset_gives_the_same_cdr(
        self, make_dlr: MakeDlr, pricing: PricingSnapshot
    ) -> None:
        utc = project_raw(make_dlr(), pricing)
        shifted = project_raw(
            make_dlr(submitted_at="2026-04-10T00:15:00.123-10:00",
                     done_at="2026-04-10T23:15:03.456+13:00"),
            pricing,
        )
        assert utc == shifted


class TestRejectedInput:
    def test_bad_msisdn_never_becomes_a_cdr(
        self, make_dlr: MakeDlr, pricing: PricingSnapshot
    ) -> None:
        with pytest.raises(InvalidDlr) as err:
            project_raw(make_dlr(msisdn="015123456789"), pricing)
        assert err.value.reason_code == "invalid_msisdn"

    def test_naive_timestamp_never_becomes_a_cdr(
        self, make_dlr: MakeDlr, pricing: PricingSnapshot
    ) -> None:
        with pytest.raises(InvalidDlr) as err:
            project_raw(make_dlr(done_at="2026-04-10T10:15:03.456"), pricing)
        assert err.value.reason_code == "invalid_timestamp"


class TestCdrId:
    def test_namespace_is_derived_as_documented(self) -> None:
        assert CDR_ID_NAMESPACE == uuid.uuid5(uuid.NAMESPACE_URL, "urn:cdr-mediation:cdr-id:v1")

    def test_cdr_id_is_uuid5_of_the_dlr_id_computed_by_hand(self) -> None:
        # RFC 9562 §5.5 by hand: SHA-1(namespace bytes ‖ name), version 5, RFC 4122 variant.
        digest = bytearray(
            hashlib.sha1(
                CDR_ID_NAMESPACE.bytes + b"0f8fad5b-d9cb-469f-a165-70867728950e"
            ).digest()[:16]
        )
        digest[6] = (digest[6] & 0x0F) | 0x50
        digest[8] = (digest[8] & 0x3F) | 0x80
        expected = str(uuid.UUID(bytes=bytes(digest)))
        assert cdr_id_for("0f8fad5b-d9cb-469f-a165-70867728950e") == expected
        assert expected == "4df915ca-f22c-5214-9542-631074267f2a"

    def test_redelivery_yields_the_same_cdr_id_and_other_dlrs_do_not(
        self, make_dlr: MakeDlr, pricing: PricingSnapshot
    ) -> None:
        first = project_raw(make_dlr(), pricing)
        again = project_raw(make_dlr(x_redelivered=True), pricing)
        other = project_raw(make_dlr(dlr_id="0f8fad5b-d9cb-469f-a165-70867728950f"), pricing)
        assert first.cdr_id == again.cdr_id != other.cdr_id


class TestDeterminism:
    def test_projection_and_hash_are_reproducible(
        self, make_dlr: MakeDlr, pricing: PricingSnapshot
    ) -> None:
        raw = make_dlr(segments=4, status="EXPIRED")
        results = {link(ChainHead.genesis("op-a"), project_raw(raw, pricing))[1] for _ in range(3)}
        assert len(results) == 1

    @settings(max_examples=200, deadline=None)
    @given(
        status=st.sampled_from([s.value for s in DlrStatus]),
        segments=st.integers(1, 255),
        tenant=st.sampled_from(["tenant-1", "tenant-7"]),
        minute_offset=st.integers(-(23 * 60 + 59), 23 * 60 + 59),
        error_code=st.none() | st.from_regex(r"\A[A-Za-z0-9._:-]{1,32}\Z"),
    )
    def test_every_entry_is_in_the_fast_canonical_domain(
        self, make_dlr: MakeDlr, pricing: PricingSnapshot, status: str, segments: int,
        tenant: str, minute_offset: int, error_code: Any,
    ) -> None:
        sign = "+" if minute_offset >= 0 else "-"
        hours, minutes = divmod(abs(minute_offset), 60)
        zone = f"{sign}{hours:02d}:{minutes:02d}"
        raw = make_dlr(status=status, segments=segments, tenant_id=tenant, error_code=error_code,
                       submitted_at=f"2026-05-01T12:00:00{zone}",
                       done_at=f"2026-05-01T12:00:09{zone}")
        entry = link(ChainHead.genesis("op-a"), project_raw(raw, pricing))[0].to_entry()
        assert is_fast_path_value(entry)
        assert all(key.isascii() for key in entry)
        assert json.loads(rfc8785.dumps(entry)) == entry
