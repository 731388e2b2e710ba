"""Query-string parsing shared by the portal's list endpoints: every problem is a 400
``bad_request`` that says which parameter and what was expected, never a silent default."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Mapping
from typing import Any

from cdr_mediation.domain.cdr import format_utc
from cdr_mediation.domain.dlr import PATTERNS
from cdr_mediation.portal.errors import ApiError

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_RE = {name: re.compile(PATTERNS[name]) for name in ("operator_id", "msisdn")}
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def checked(query: Mapping[str, str] | Any, allowed: Collection[str]) -> dict[str, str]:
    """The parameters as a dict, refusing unknown ones (a typo must not widen a search) and
    repeated ones (which of two values was meant is not guessed)."""
    keys = list(query.keys())
    unknown = sorted(set(keys) - set(allowed))
    if unknown:
        raise bad_request(f"unknown parameter(s) {', '.join(unknown)}; expected {', '.join(allowed)}")
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise bad_request(f"parameter(s) {', '.join(repeated)} given more than once")
    return {key: query[key] for key in keys}


def limit(params: Mapping[str, str]) -> int:
    text = params.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    if not re.fullmatch(r"[0-9]{1,7}", text) or not 1 <= int(text) <= MAX_LIMIT:
        raise bad_request(f"limit={text[:20]!r} is not an integer from 1 to {MAX_LIMIT}")
    return int(text)


def matching(name: str, text: str, pattern: str, example: str) -> str:
    if not re.fullmatch(pattern, text):
        raise bad_request(f"{name}={text[:80]!r} is not valid: expected e.g. {example}")
    return text


def operator_id(params: Mapping[str, str], name: str = "operator_id") -> str | None:
    text = params.get(name)
    if text is None:
        return None
    if not _RE["operator_id"].fullmatch(text):
        raise bad_request(f"{name}={text[:80]!r} is not an operator id ({PATTERNS['operator_id']})")
    return text


def msisdn(params: Mapping[str, str]) -> str | None:
    """An E.164 number with its '+'. Never quoted back: the message must not carry it to a log."""
    text = params.get("msisdn")
    if text is None:
        return None
    if not _RE["msisdn"].fullmatch(text):
        raise bad_request("msisdn is not an E.164 number with its '+' (e.g. +447700900123; "
                          "encode '+' as %2B in a query string)")
    return text


def one_of(params: Mapping[str, str], name: str, values: Collection[str]) -> str | None:
    text = params.get(name)
    if text is not None and text not in values:
        raise bad_request(f"{name}={text[:40]!r} is not one of {', '.join(sorted(values))}")
    return text


def instant(params: Mapping[str, str], name: str) -> dt.datetime | None:
    """An RFC 3339 instant with an offset, as an aware UTC datetime."""
    text = params.get(name)
    return None if text is None else parse_instant(name, text)


def time_range(params: Mapping[str, str], start: str = "from", end: str = "to") -> tuple[dt.datetime | None,
                                                                                             dt.datetime | None]:
    lower, upper = instant(params, start), instant(params, end)
    if lower is not None and upper is not None and lower >= upper:
        raise bad_request(f"{start} ({format_utc(lower)}) must be before {end} ({format_utc(upper)})")
    return lower, upper


def day(params: Mapping[str, str], name: str) -> dt.date | None:
    text = params.get(name)
    if text is None:
        return None
    try:
        if not _DAY.fullmatch(text):
            raise ValueError
        return dt.date.fromisoformat(text)
    except ValueError:
        raise bad_request(f"{name}={text[:40]!r} is not a day (YYYY-MM-DD, UTC)") from None


# "+01:00" in an unencoded query string arrives as " 01:00" ("+" means space there).
_SPACE_FOR_PLUS = re.compile(r"(.*[0-9]) ([0-9]{2}(?::?[0-9]{2})?)")
_UTC = dt.timezone.utc


def parse_instant(name: str, text: str) -> dt.datetime:
    """An ISO 8601 instant with a UTC offset (``Z`` or ``±hh:mm``), as an aware UTC datetime."""
    candidates = [text]
    if (match := _SPACE_FOR_PLUS.fullmatch(text)) is not None:
        candidates.append(f"{match[1]}+{match[2]}")
    for candidate in candidates:
        try:
            moment = dt.datetime.fromisoformat(candidate)
        except ValueError:
            continue
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise bad_request(f"{name}={text!r} has no UTC offset: give an instant such as 2026-11-01T10:00:00Z")
        try:
            return moment.astimezone(_UTC)
        except OverflowError:
            break
    raise bad_request(f"{name}={text!r} is not an ISO 8601 instant such as 2026-11-01T10:00:00Z")
