"""RFC 8785 canonical JSON: the fast path is byte-equal to the `rfc8785` reference.

DESIGN.md §5 allows a fast serialiser on the hot path only with this proof.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from typing import Any

import orjson
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from cdr_mediation.codecs.canonical_json import (
    CanonicalizationError,
    canonical_bytes,
    is_fast_path_value,
)
from cdr_mediation.domain.cdr import Cdr, DlrStatus, RecordType, format_utc
from cdr_mediation.domain.chain import ChainHead, link

SAFE = 2**53 - 1

# ---------------------------------------------------------------- strategies ---------------

ascii_id = st.from_regex(r"\A[A-Za-z0-9._:-]{1,64}\Z")
timestamp = st.datetimes(timezones=st.just(dt.timezone.utc)).map(format_utc)


@st.composite
def cdr_entries(draw: st.DrawFn) -> dict[str, Any]:
    """Chain entries as the system produces them: every field in its real domain."""
    segments = draw(st.integers(1, 255))
    unit = draw(st.integers(0, 1_000_000_000))
    billable = draw(st.booleans())
    unlinked = Cdr(
        record_type=draw(st.sampled_from(RecordType)),
        cdr_id=draw(st.uuids(version=5).map(str)),
        dlr_id=draw(ascii_id),
        message_id=draw(ascii_id),
        tenant_id=draw(ascii_id),
        operator_id="op-a",
        sender_id=draw(st.from_regex(r"\A[!-~](?:[ -~]{0,14}[!-~])?\Z")),
        msisdn=draw(st.from_regex(r"\A\+[1-9][0-9]{7,14}\Z")),
        status=draw(st.sampled_from(DlrStatus)),
        submitted_at=draw(timestamp),
        done_at=draw(timestamp),
        segments=segments,
        billable=billable,
        unit_price_minor=unit,
        amount_minor=unit * segments if billable else 0,
        tax_minor=draw(st.integers(0, unit * segments)),
        currency=draw(st.sampled_from(["EUR", "USD", "GBP", "XOF"])),
        pricing_version=draw(ascii_id),
        error_code=draw(st.none() | ascii_id),
        smsc_id=draw(ascii_id),
        chain_seq=0,
        prev_hash="",
        ref_cdr_id=draw(st.none() | st.uuids().map(str)),
        ticket_ref=draw(st.none() | st.text(max_size=40)),  # free text from the admin UI
        actor=draw(st.none() | st.text(max_size=40)),
    )
    seq = draw(st.integers(0, SAFE - 1))
    head = ChainHead("op-a", seq, draw(st.binary(min_size=32, max_size=32)).hex())
    return link(head, unlinked)[0].to_entry()


scalars = st.none() | st.booleans() | st.integers(-SAFE, SAFE) | st.text()
in_domain_json = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(st.characters(max_codepoint=127), max_size=8), children, max_size=5),
    max_leaves=25,
)
any_json = st.recursive(
    scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=25,
)


# ---------------------------------------------------------------- properties ---------------

@settings(max_examples=500, deadline=None)
@given(cdr_entries())
def test_chain_entries_take_the_fast_path_and_equal_the_reference(entry: dict[str, Any]) -> None:
    assert is_fast_path_value(entry)
    assert canonical_bytes(entry) == rfc8785.dumps(entry)


@settings(max_examples=500, deadline=None)
@given(in_domain_json)
def test_fast_path_equals_the_reference_on_its_whole_domain(value: Any) -> None:
    assert is_fast_path_value(value)
    assert orjson.dumps(value, option=orjson.OPT_SORT_KEYS) == rfc8785.dumps(value)
    assert canonical_bytes(value) == rfc8785.dumps(value)


@settings(max_examples=500, deadline=None)
@given(any_json)
def test_any_json_value_canonicalises_like_the_reference(value: Any) -> None:
    assert canonical_bytes(value) == rfc8785.dumps(value)


@settings(max_examples=500, deadline=None)
@given(st.text(st.characters(exclude_categories=["Cs"])))
def test_every_string_escapes_like_the_reference(text: str) -> None:
    # Any Unicode scalar value, control characters included; surrogates are not strings JSON
    # can carry (see test_values_json_cannot_carry_are_refused).
    assert canonical_bytes({"s": text}) == rfc8785.dumps({"s": text})


# ---------------------------------------------------------------- RFC 8785 examples --------

def test_rfc8785_section_3_2_4_example() -> None:
    source = (
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        r' "string": "\u20ac$\u000F\u000aA' "'" r'\u0042\u0022\u005c\\\"\/",'
        ' "literals": [null, true, false]}'
    )
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    ).encode()
    assert canonical_bytes(json.loads(source)) == expected


def test_rfc8785_section_3_2_3_key_order_is_by_utf16_code_units() -> None:
    value = {"\u20ac": 0, "\r": 0, "\ufb33": 0, "1": 0, "\U0001f600": 0, "\u0080": 0, "\u00f6": 0}
    keys = list(json.loads(canonical_bytes(value)))
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    # orjson sorts by code point and would put the emoji last: why non-ASCII keys fall back.
    assert list(json.loads(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)))[-1] == "\U0001f600"
    assert not is_fast_path_value(value)


# ---------------------------------------------------------------- domain edges -------------

def test_integer_limits() -> None:
    assert canonical_bytes([SAFE, -SAFE]) == b"[9007199254740991,-9007199254740991]"
    assert is_fast_path_value(SAFE) and not is_fast_path_value(SAFE + 1)
    for out_of_range in (SAFE + 1, -SAFE - 1, 2**64):
        with pytest.raises(CanonicalizationError):
            canonical_bytes({"amount_minor": out_of_range})


def test_float_goes_to_the_reference_which_writes_ecmascript_numbers() -> None:
    assert not is_fast_path_value({"a": 1.0})
    assert orjson.dumps(1.0) == b"1.0"  # what the fast path would have written
    assert canonical_bytes({"a": 1.0, "b": 0.1, "c": 1e21}) == b'{"a":1,"b":0.1,"c":1e+21}'


def test_values_json_cannot_carry_are_refused() -> None:
    for bad in ("\ud800", {"k": float("nan")}, {"k": float("inf")}, {1: "x"}, {"k": object()}):
        with pytest.raises(CanonicalizationError):
            canonical_bytes(bad)


def test_booleans_are_not_numbers() -> None:
    assert canonical_bytes([True, False, 1, 0]) == b"[true,false,1,0]"


def test_subclasses_and_tuples_fall_back_with_the_same_bytes() -> None:
    class Colour(str, enum.Enum):
        RED = "RED"

    assert not is_fast_path_value({"c": Colour.RED})
    assert canonical_bytes({"c": Colour.RED, "t": (1, 2)}) == b'{"c":"RED","t":[1,2]}'


def test_control_characters_and_line_separators() -> None:
    value = {"s": "\x00\x08\t\n\x0b\x0c\r\x1f\x7f\u2028\u2029\"\\/"}
    assert canonical_bytes(value) == (
        b'{"s":"\\u0000\\b\\t\\n\\u000b\\f\\r\\u001f\x7f\xe2\x80\xa8\xe2\x80\xa9\\"\\\\/"}'
    )
    assert canonical_bytes(value) == rfc8785.dumps(value)


def test_nesting_deeper_than_orjson_allows_still_canonicalises() -> None:
    value: Any = 0
    for _ in range(300):
        value = [value]
    assert is_fast_path_value(value)
    assert canonical_bytes(value) == b"[" * 300 + b"0" + b"]" * 300
