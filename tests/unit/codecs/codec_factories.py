"""Shared builders for the codec tests: CDRs, headers, Hypothesis strategies, and the full
reference ASN.1 modules (the independent check: never the package's own subset)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import os
from pathlib import Path
from typing import Any

import asn1tools
from hypothesis import strategies as st

from cdr_mediation.domain.cdr import Cdr, DlrStatus, RecordType, format_utc
from cdr_mediation.codecs.header import FileHeader

REPO_ROOT = Path(__file__).resolve().parents[3]
UTC = dt.timezone.utc


def shared_dir() -> Path:
    return Path(os.environ.get("CDR_SHARED_DIR", REPO_ROOT.parent / "shared"))


@functools.cache
def reference_spec() -> Any:
    """TAP-0312 + RAP-0105 exactly as in spec/asn1 (the full GSMA modules)."""
    asn1_dir = shared_dir() / "spec" / "asn1"
    return asn1tools.compile_files([str(asn1_dir / "TAP-0312.asn"), str(asn1_dir / "RAP-0105.asn")], "ber")


def reference_tap() -> Any:
    return reference_spec().modules["TAP-0312"]["DataInterChange"]


def reference_rap() -> Any:
    return reference_spec().modules["RAP-0105"]["RapDataInterChange"]


def make_header(**overrides: Any) -> FileHeader:
    values: dict[str, Any] = dict(
        operator_id="op-a",
        sender="AFGAW",
        recipient="AFGRA",
        file_sequence_number=42,
        transfer_cut_off=dt.datetime(2026, 3, 2, 0, 0, tzinfo=UTC),
        file_available=dt.datetime(2026, 3, 2, 1, 0, tzinfo=UTC),
        time_zone="+0430",
        currency="AFN",
        currency_exponent=2,
        tap_decimal_places=3,
    )
    values.update(overrides)
    return FileHeader(**values)


def make_cdr(chain_seq: int = 1, **overrides: Any) -> Cdr:
    values: dict[str, Any] = dict(
        record_type=RecordType.CDR,
        cdr_id=f"cdr-{chain_seq:06d}",
        dlr_id=f"dlr-{chain_seq}",
        message_id=f"msg-{chain_seq}",
        tenant_id="tenant-1",
        operator_id="op-a",
        sender_id="ACME",
        msisdn="+93701234567",
        status=DlrStatus.DELIVERED,
        submitted_at="2026-03-01T10:00:00.123Z",
        done_at="2026-03-01T10:00:05.999Z",
        segments=1,
        billable=True,
        unit_price_minor=150,
        amount_minor=150,
        tax_minor=15,
        currency="AFN",
        pricing_version="pv-1",
        error_code=None,
        smsc_id="smsc-1",
        chain_seq=chain_seq,
        prev_hash="0" * 64,
        ref_cdr_id=None,
        ticket_ref=None,
        actor=None,
    )
    values.update(overrides)
    return Cdr(**values)


# -- Hypothesis strategies -------------------------------------------------------------------

_ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


def visible_ascii(max_size: int = 24) -> st.SearchStrategy[str]:
    """Non-empty visible ASCII without leading/trailing spaces (TAP AsciiString)."""
    return st.text(_ASCII, min_size=1, max_size=max_size).filter(lambda s: s[0] != " " and s[-1] != " ")


msisdns = st.builds(
    lambda first, rest: f"+{first}{rest}",
    st.integers(1, 9),
    st.text(st.characters(min_codepoint=0x30, max_codepoint=0x39), max_size=14),
)

ZONES = ["+0000", "+0430", "-0330", "+0545", "+1400", "-1200", "Europe/Berlin", "America/Sao_Paulo", "Australia/Lord_Howe"]
_CUT_OFF = dt.datetime(2031, 1, 1, tzinfo=UTC)


_sequence_numbers = st.integers(1, 99999)
_zones = st.sampled_from(ZONES)
_currencies = st.sampled_from(["AFN", "EUR", "JPY", "KWD"])
_places = [st.integers(exponent, 6) for exponent in range(4)]


@st.composite
def headers(draw: Any) -> FileHeader:
    exponent = draw(st.integers(0, 3))
    return make_header(
        file_sequence_number=draw(_sequence_numbers),
        time_zone=draw(_zones),
        currency=draw(_currencies),
        currency_exponent=exponent,
        tap_decimal_places=draw(_places[exponent]),
        transfer_cut_off=_CUT_OFF,
        file_available=_CUT_OFF + dt.timedelta(hours=draw(st.integers(0, 48))),
        test_data=draw(st.booleans()),
        rap_file_sequence_number=draw(st.none() | _sequence_numbers),
    )


_moments = st.datetimes(
    min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2030, 12, 31, 23, 0), timezones=st.just(UTC)
)
# Strategies are built once: Hypothesis validates each new strategy object, which would
# otherwise dominate the run time of the property tests.
_record_types = st.sampled_from(list(RecordType))
_statuses = st.sampled_from(list(DlrStatus))
_ids = visible_ascii(40)
_senders = visible_ascii(16)
_error_codes = st.none() | visible_ascii(8)
_smscs = st.sampled_from(("smsc-1", "smsc-2", "SMSC 3"))
_delays = st.integers(0, 600_000)
_amounts = st.integers(0, 10**12)
_taxes = st.integers(0, 10**10)
_segments = st.integers(1, 255)
_booleans = st.booleans()


@st.composite
def cdrs_for(draw: Any, header: FileHeader, chain_seq: int) -> Cdr:
    record_type = draw(_record_types)
    done = draw(_moments)
    submitted = done - dt.timedelta(milliseconds=draw(_delays))
    amount = 0 if record_type is RecordType.VOID else draw(_amounts)
    tax = 0 if record_type is RecordType.VOID else draw(_taxes)
    cdr_id = draw(_ids)
    ref = None
    if record_type is not RecordType.CDR:
        ref = draw(_ids)
        if ref == cdr_id:
            ref += "-original"
    return make_cdr(
        chain_seq,
        record_type=record_type,
        cdr_id=cdr_id,
        operator_id=header.operator_id,
        currency=header.currency,
        msisdn=draw(msisdns),
        sender_id=draw(_senders),
        smsc_id=draw(_smscs),
        status=draw(_statuses),
        submitted_at=format_utc(submitted),
        done_at=format_utc(done),
        segments=draw(_segments),
        billable=draw(_booleans),
        amount_minor=amount,
        tax_minor=tax,
        error_code=draw(_error_codes),
        ref_cdr_id=ref,
    )


_chain_seqs = st.integers(1, 10**9)


@st.composite
def files(draw: Any, min_records: int = 0, max_records: int = 6) -> tuple[FileHeader, list[Cdr]]:
    """A header and records for it, in chain order (chain_seq strictly increasing)."""
    header = draw(headers())
    count = draw(st.integers(min_records, max_records))
    seqs = sorted(draw(st.sets(_chain_seqs, min_size=count, max_size=count)))
    return header, [draw(cdrs_for(header, seq)) for seq in seqs]


def truncated(moment_text: str) -> dt.datetime:
    """A format_utc string at TAP's precision (milliseconds dropped)."""
    return dt.datetime.strptime(moment_text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)


def replace(cdr: Cdr, **changes: Any) -> Cdr:
    return dataclasses.replace(cdr, **changes)
