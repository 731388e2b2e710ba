"""TAP timestamps from the CDR's UTC timestamps.

TAP writes local time. Event timestamps are `DateTime`: a local `CCYYMMDDhhmmss` plus a
`utcTimeOffsetCode` that points into `NetworkInfo.utcTimeOffsetInfo`; file-level timestamps
are `DateTimeLong`: local time plus the literal offset (``"+0430"``).

CDR timestamps are `format_utc` strings with milliseconds (``2026-11-22T10:15:00.123Z``).
TAP has whole seconds, so the milliseconds are dropped (truncated, never rounded: the same
rule `format_utc` applies to microseconds, so a record and its TAP form never disagree about
which second it belongs to).
"""

from __future__ import annotations

from collections.abc import Iterable
import datetime as dt
import re
import zoneinfo

_FIXED_OFFSET = re.compile(r"([+-])(\d\d)(\d\d)", re.ASCII)
# The exact `format_utc` form; anything else is not a chain entry timestamp.
_FORMAT_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:[0-5]\d\.\d{3}Z", re.ASCII)
_UTC = dt.timezone.utc
_SECOND_PARTS = {f":{second:02d}": f"{second:02d}".encode("ascii") for second in range(60)}  # ":ss" -> b"ss"


def parse_zone(name: str) -> dt.tzinfo:
    """``"+HHMM"``/``"-HHMM"`` as a fixed offset, anything else as an IANA zone name."""
    fixed = _FIXED_OFFSET.fullmatch(name)
    if fixed:
        sign, hours, minutes = fixed.groups()
        if int(hours) > 14 or int(minutes) > 59:
            raise ValueError(f"UTC offset {name!r} is out of range (HH <= 14, MM <= 59)")
        delta = dt.timedelta(hours=int(hours), minutes=int(minutes))
        return dt.timezone(-delta if sign == "-" else delta)
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"time zone {name!r} is neither +HHMM/-HHMM nor a known IANA zone") from exc


def offset_text(offset: dt.timedelta) -> str:
    """A UTC offset as TAP's `UtcTimeOffset`: ``+HHMM`` / ``-HHMM`` (whole minutes)."""
    if offset % dt.timedelta(minutes=1):
        raise ValueError(f"UTC offset {offset} is not a whole number of minutes")
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}{minutes:02d}"


def date_time_long(moment: dt.datetime, zone: dt.tzinfo) -> dict[str, bytes]:
    """An aware datetime as a TAP `DateTimeLong` value in `zone` (seconds truncated)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("timestamp must be timezone-aware")
    local = moment.astimezone(zone)
    offset = local.utcoffset()
    assert offset is not None
    return {
        "localTimeStamp": local.strftime("%Y%m%d%H%M%S").encode("ascii"),
        "utcTimeOffset": offset_text(offset).encode("ascii"),
    }


def parse_format_utc(text: str) -> dt.datetime:
    """A `format_utc` string as an aware UTC datetime (milliseconds kept)."""
    if not isinstance(text, str) or not _FORMAT_UTC.fullmatch(text):
        raise ValueError(f"{text!r} is not a UTC timestamp in format_utc form (YYYY-MM-DDThh:mm:ss.mmmZ)")
    try:
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=_UTC)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid calendar time") from exc


class EventClock:
    """Turns `format_utc` strings into TAP `DateTime` parts: local time and offset code.

    Offset codes are handed out in the order offsets are first met, so they depend only on
    the records and their order (chain order), never on the wall clock. A zone with daylight
    saving produces two codes in a file that spans a change.

    Local time is computed once per UTC minute (offsets only change on minute boundaries) and
    the result for each second is cached as well: a day's file has at most 86,400 seconds
    and typically many records per second. Caches are cleared when they pass `cache_limit`
    entries, so memory stays bounded whatever the record count.
    """

    __slots__ = ("_zone", "_codes", "offsets", "_minutes", "seconds", "millis", "_cache_limit")

    def __init__(self, zone: dt.tzinfo, *, cache_limit: int = 20_000) -> None:
        self._zone = zone
        self._codes: dict[str, int] = {}
        self.offsets: list[str] = []  # index = utcTimeOffsetCode
        # "YYYY-MM-DDThh:mm" -> (local "CCYYMMDDhhmm", offset code)
        self._minutes: dict[str, tuple[bytes, int]] = {}
        # "YYYY-MM-DDThh:mm:ss" -> (local "CCYYMMDDhhmmss", offset code). Public, with
        # `millis`, for the record mapper's inlined fast path: a string whose [:19] is a key
        # here and whose [19:] is in `millis` is a valid format_utc string.
        self.seconds: dict[str, tuple[bytes, int]] = {}
        # Validated ".mmmZ" parts; 1,000 exist, so the set fills up early and stops growing.
        self.millis: set[str] = set()
        self._cache_limit = cache_limit

    def add_offsets(self, offsets: Iterable[str]) -> None:
        """Give these new offsets (`offset_text` form) the next codes, in order (a later part of
        a file starts with the codes the records before it handed out)."""
        for offset in offsets:
            if offset in self._codes:
                raise ValueError(f"offset {offset!r} given twice")
            self._codes[offset] = len(self.offsets)
            self.offsets.append(offset)

    def meet_minute(self, minute: str) -> None:
        """Meet the UTC minute "YYYY-MM-DDThh:mm" as a record's timestamp would: its offset gets
        the next code if it is new. Replaying the minutes the earlier records met, in the order
        they met them, leaves the codes as those records left them (`parts.code_tables_met`)."""
        if minute not in self._minutes:
            self._convert_minute(minute)

    def event_time(self, text: str) -> tuple[bytes, int]:
        """(localTimeStamp, utcTimeOffsetCode) for a `format_utc` string; ValueError if malformed.

        Only validated keys ever enter the caches, and a string is answered from them only if
        every part of it (second or minute, ":ss", ".mmmZ") is such a key, so the fast path
        accepts exactly what the validating path accepts.
        """
        if text.__class__ is str and text[19:] in self.millis:
            result = self.seconds.get(text[:19])
            if result is not None:
                return result
            minute = self._minutes.get(text[:16])
            if minute is not None:
                second = _SECOND_PARTS.get(text[16:19])
                if second is not None:  # a new second of a known minute
                    result = (minute[0] + second, minute[1])
                    seconds = self.seconds
                    if len(seconds) >= self._cache_limit:
                        seconds.clear()
                    seconds[text[:19]] = result
                    return result
        return self._event_time_slow(text)

    def _event_time_slow(self, text: str) -> tuple[bytes, int]:
        if not isinstance(text, str) or not _FORMAT_UTC.fullmatch(text):
            raise ValueError(f"{text!r} is not a UTC timestamp in format_utc form (YYYY-MM-DDThh:mm:ss.mmmZ)")
        minute = self._minutes.get(text[:16])
        if minute is None:
            minute = self._convert_minute(text[:16])
        self.millis.add(text[19:])
        return self._remember(text, minute)

    def _remember(self, text: str, minute: tuple[bytes, int]) -> tuple[bytes, int]:
        result = (minute[0] + _SECOND_PARTS[text[16:19]], minute[1])
        if len(self.seconds) >= self._cache_limit:
            self.seconds.clear()
        self.seconds[text[:19]] = result
        return result

    def _convert_minute(self, minute: str) -> tuple[bytes, int]:
        try:
            utc = dt.datetime.strptime(minute, "%Y-%m-%dT%H:%M").replace(tzinfo=_UTC)
        except ValueError as exc:
            raise ValueError(f"{minute!r}... is not a valid calendar time") from exc
        try:
            local = utc.astimezone(self._zone)
        except OverflowError as exc:
            raise ValueError(f"{minute!r}... cannot be represented as local time") from exc
        if not 1 <= local.year <= 9999:  # pragma: no cover - astimezone raises first
            raise ValueError(f"{minute!r}... cannot be represented as local time")
        offset = offset_text(local.utcoffset() or dt.timedelta(0))
        code = self._codes.get(offset)
        if code is None:
            code = self._codes[offset] = len(self.offsets)
            self.offsets.append(offset)
        if len(self._minutes) >= self._cache_limit:
            self._minutes.clear()
        result = (local.strftime("%Y%m%d%H%M").encode("ascii"), code)
        self._minutes[minute] = result
        return result
