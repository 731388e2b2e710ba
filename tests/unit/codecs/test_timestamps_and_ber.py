"""TAP time conversion and the BER primitives."""

from __future__ import annotations

import datetime as dt

import asn1tools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdr_mediation.codecs import ber
from cdr_mediation.codecs.tap.record import AmountScale, bcd_digits
from cdr_mediation.codecs.tap.timestamps import EventClock, date_time_long, offset_text, parse_format_utc, parse_zone
from cdr_mediation.domain.cdr import format_utc

UTC = dt.timezone.utc


def test_parse_zone_fixed_offsets_and_names():
    assert parse_zone("+0430").utcoffset(None) == dt.timedelta(hours=4, minutes=30)
    assert parse_zone("-0330").utcoffset(None) == -dt.timedelta(hours=3, minutes=30)
    assert parse_zone("Europe/Berlin").utcoffset(dt.datetime(2026, 7, 1)) == dt.timedelta(hours=2)
    with pytest.raises(ValueError, match="out of range"):
        parse_zone("+1460")
    with pytest.raises(ValueError, match="neither"):
        parse_zone("0430")


def test_offset_text():
    assert offset_text(dt.timedelta(hours=5, minutes=45)) == "+0545"
    assert offset_text(dt.timedelta(hours=-9, minutes=-30)) == "-0930"
    assert offset_text(dt.timedelta(0)) == "+0000"
    with pytest.raises(ValueError, match="whole number of minutes"):
        offset_text(dt.timedelta(seconds=30))


def test_date_time_long_truncates_and_requires_aware_datetimes():
    moment = dt.datetime(2026, 3, 1, 19, 45, 10, 999999, tzinfo=UTC)
    assert date_time_long(moment, parse_zone("+0430")) == {"localTimeStamp": b"20260302001510", "utcTimeOffset": b"+0430"}
    with pytest.raises(ValueError, match="timezone-aware"):
        date_time_long(dt.datetime(2026, 3, 1), UTC)


def test_event_clock_codes_offsets_in_first_met_order_and_answers_from_cache():
    clock = EventClock(parse_zone("Europe/Berlin"))
    summer = clock.event_time("2026-07-01T10:00:00.000Z")
    winter = clock.event_time("2026-01-01T10:00:00.000Z")
    assert summer == (b"20260701120000", 0) and winter == (b"20260101110000", 1)
    assert clock.offsets == ["+0200", "+0100"]
    assert clock.event_time("2026-07-01T10:00:00.999Z") == summer  # same second
    again = clock.event_time("2026-07-01T10:00:00.000Z")
    assert clock.event_time("2026-07-01T10:00:00.000Z") is again  # answered from the cache
    assert clock.event_time("2026-07-01T10:00:59.001Z") == (b"20260701120059", 0)  # same minute


@pytest.mark.parametrize(
    "text",
    [
        "2026-07-01T10:00:00Z",
        "2026-07-01T10:00:00.000",
        "2026-07-01T10:00:60.000Z",
        "2026-07-01 10:00:00.000Z",
        "2026-07-01T10:00:00.000Z ",
        "2026-07-01T10:00:0٣.000Z",  # a non-ASCII digit
        b"2026-07-01T10:00:00.000Z",
        None,
    ],
)
def test_event_clock_rejects_what_is_not_format_utc_even_when_parts_are_cached(text):
    clock = EventClock(UTC)
    clock.event_time("2026-07-01T10:00:00.000Z")  # minute, second and millisecond parts cached
    with pytest.raises(ValueError, match="format_utc"):
        clock.event_time(text)


def test_event_clock_bounds_its_caches():
    clock = EventClock(UTC, cache_limit=10)
    for second in range(40):
        clock.event_time(f"2026-07-01T10:{second // 60:02d}:{second % 60:02d}.000Z")
    assert len(clock.seconds) <= 10


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(UTC)))
def test_event_clock_agrees_with_datetime_arithmetic(moment: dt.datetime):
    zone = parse_zone("America/Sao_Paulo")
    local, code = EventClock(zone).event_time(format_utc(moment))
    expected = moment.replace(microsecond=0).astimezone(zone)
    assert local == expected.strftime("%Y%m%d%H%M%S").encode()
    assert parse_format_utc(format_utc(moment)) == moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def test_bcd_packing():
    assert bcd_digits("93701234567") == bytes.fromhex("93701234567f")
    assert bcd_digits("4915") == bytes.fromhex("4915")
    assert bcd_digits("7") == b"\x7f"


def test_amount_scale_is_exact_both_ways():
    up = AmountScale(currency_exponent=2, tap_decimal_places=5)
    assert up.to_tap(1234, "p", "f") == 1234000 and up.to_minor(1234000) == 1234
    down = AmountScale(currency_exponent=3, tap_decimal_places=2)
    assert down.to_tap(1230, "p", "f") == 123 and down.to_minor(123) == 1230


_tool = asn1tools.compile_string(
    "M DEFINITIONS IMPLICIT TAGS ::= BEGIN I ::= [APPLICATION 397] INTEGER O ::= [APPLICATION 30] OCTET STRING END",
    "ber",
)


@pytest.mark.parametrize("value", [0, 1, -1, 127, 128, -128, -129, 255, 256, -256, -257, 32767, -32768, -32769])
def test_integer_encoding_at_octet_boundaries(value: int):
    assert ber.tag(397, constructed=False) + ber.length(len(ber.integer(value))) + ber.integer(value) == _tool.encode("I", value)


@settings(max_examples=300, deadline=None)
@given(st.integers(-(1 << 70), 1 << 70))
def test_integer_encoding_matches_asn1tools(value: int):
    assert ber.tag(397, constructed=False) + ber.length(len(ber.integer(value))) + ber.integer(value) == _tool.encode("I", value)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=70000))
def test_length_encoding_matches_asn1tools(content: bytes):
    assert ber.tlv(ber.tag(30, constructed=False), content) == _tool.encode("O", content)


def test_tag_and_length_forms():
    assert ber.tag(1, constructed=True) == b"\x61"
    assert ber.tag(30, constructed=False) == b"\x5e"
    assert ber.tag(31, constructed=False) == b"\x5f\x1f"
    assert ber.tag(12, constructed=True) == b"\x6c"
    assert ber.tag(433, constructed=True) == b"\x7f\x83\x31"
    assert ber.length(127) == b"\x7f" and ber.length(128) == b"\x81\x80" and ber.length(65536) == b"\x83\x01\x00\x00"
    assert ber.header_size(200, b"\x61") == 3
