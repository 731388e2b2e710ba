"""Validation of what the ASN.1 does not enforce, driven by the shipped modules themselves.

asn1tools checks structure only. TAP 3.12 puts its real rules elsewhere:

* mandatory items are the members marked `-- *m.m.` (everything is OPTIONAL in the ASN.1 so
  that RAP can return incomplete records); in RAP the non-OPTIONAL members;
* `SIZE` constraints written on referenced types (`PlmnId ::= [APPLICATION 169] AsciiString
  (SIZE(5))`), which asn1tools silently ignores;
* the character sets and value ranges described in comments: AsciiString is visible ISO 646
  without leading/trailing spaces and not only spaces, NumberString digits, BCDString digit
  nibbles with one trailing `f` filler at most, AbsoluteAmount >= 0, ... (HexString has no
  rule here because no type of the shipped subset uses it).

`check()` walks a value in asn1tools' Python form (dicts, lists, `(alternative, value)`
tuples, bytes, ints) along the parsed type definitions and raises the first violation as a
`CodecValidationError` naming the member path. It runs on every file header, audit trailer
and RAP structure the codec writes or reads; per-record hot-path checks are specialised in
`tap.record` and proven equivalent by tests that run this checker on generated records.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from . import asn1
from .errors import CodecValidationError

# Every INTEGER must fit in 8 octets: TAP receivers commonly hold them in 64-bit integers and
# TD.58 (TAP 3.12 implementation handbook) warns against longer encodings.
_INT64 = (-(1 << 63), (1 << 63) - 1)

_NUMBER = re.compile(rb"[0-9]+")
_TADIG = re.compile(rb"[A-Z]{3}[A-Z0-9]{2}")
_ISO4217 = re.compile(rb"[A-Z]{3}")
_UTC_OFFSET = re.compile(rb"[+-](\d\d)(\d\d)")
_BCD = re.compile(rb"[0-9a-e]*f?")


def _ascii_string(value: bytes) -> str | None:
    if any(b < 0x20 or b > 0x7E for b in value):
        return "AsciiString must contain visible ISO 646 characters (0x20-0x7E) only"
    if not value.strip(b" "):
        return "AsciiString cannot contain only spaces"
    if value.strip(b" ") != value:
        return "AsciiString must not have leading or trailing spaces (receivers discard them)"
    return None


def _number_string(value: bytes) -> str | None:
    return None if _NUMBER.fullmatch(value) else "NumberString must contain digits 0-9 only"


def _bcd_string(value: bytes) -> str | None:
    if not _BCD.fullmatch(value.hex().encode()):
        return "BCDString must hold digits 0-9/a-e, with a single trailing 'f' filler at most"
    return None


def _currency(value: bytes) -> str | None:
    return None if _ISO4217.fullmatch(value) else "Currency must be an ISO 4217 code (3 letters A-Z)"


def _plmn_id(value: bytes) -> str | None:
    if _TADIG.fullmatch(value):
        return None
    return "PlmnId must be a TADIG code: 3 letters A-Z then 2 letters or digits"


def _local_time_stamp(value: bytes) -> str | None:
    try:
        dt.datetime.strptime(value.decode("ascii"), "%Y%m%d%H%M%S")
    except ValueError:
        return "LocalTimeStamp must be a valid CCYYMMDDhhmmss"
    return None


def _utc_offset(value: bytes) -> str | None:
    match = _UTC_OFFSET.fullmatch(value)
    if match is None or int(match.group(1)) > 14 or int(match.group(2)) > 59:
        return "UtcTimeOffset must be +HHMM or -HHMM with HH <= 14 and MM <= 59"
    return None


def _file_sequence_number(value: bytes) -> str | None:
    return "FileSequenceNumber must be in 00001-99999" if value == b"00000" else None


def _non_negative(value: int) -> str | None:
    return None if value >= 0 else f"must be >= 0, got {value}"


def _tap_decimal_places(value: int) -> str | None:
    return None if 0 <= value <= 6 else f"TapDecimalPlaces must be in 0..6, got {value}"


# Rules attached to named types; they apply wherever the type occurs in a reference chain.
# Strings first by character set, then the named semantic types (value ranges).
_STRING_RULES: dict[str, Callable[[bytes], str | None]] = {
    "AsciiString": _ascii_string,
    "NumberString": _number_string,
    "BCDString": _bcd_string,
    "Currency": _currency,
    "PlmnId": _plmn_id,
    "LocalTimeStamp": _local_time_stamp,
    "UtcTimeOffset": _utc_offset,
    "FileSequenceNumber": _file_sequence_number,
}
_INTEGER_RULES: dict[str, Callable[[int], str | None]] = {
    # "Note, that only amounts greater than or equal to zero are allowed." (TAP-0312)
    "AbsoluteAmount": _non_negative,
    "Code": _non_negative,
    "TapDecimalPlaces": _tap_decimal_places,
    "CallEventDetailsCount": _non_negative,
    "ReturnDetailsCount": _non_negative,
}

_BUILTINS = {"SEQUENCE", "SEQUENCE OF", "CHOICE", "INTEGER", "OCTET STRING", "NULL", "BOOLEAN"}


class _Resolved:
    """A type reference followed down to its built-in base."""

    __slots__ = ("module", "names", "sizes", "base", "definition")

    def __init__(
        self, module: str, names: list[str], sizes: list[tuple[str, Any]], base: str, definition: dict[str, Any]
    ):
        self.module = module  # module in which `definition`'s member names resolve
        self.names = names  # the named types along the chain, outermost first
        self.sizes = sizes  # (type name, SIZE constraint) met along the chain
        self.base = base
        self.definition = definition


class ConstraintChecker:
    """Checks values against the shipped TAP/RAP modules' unenforced rules."""

    def __init__(self) -> None:
        self._types = asn1.parsed_types()
        self._mandatory = asn1.tap_mandatory_members()
        self._cache: dict[tuple[str, str], _Resolved] = {}
        self._opaque: frozenset[str] = frozenset()

    def check(
        self,
        type_name: str,
        value: Any,
        *,
        path: str,
        scope: str,
        module: str = asn1.TAP_MODULE,
        opaque: frozenset[str] = frozenset(),
    ) -> None:
        """Raise `CodecValidationError` for the first rule `value` breaks.

        Values of the named types in `opaque` are not looked into: RAP echoes TAP structures
        back exactly as received, rule violations included.
        """
        self._opaque = opaque
        try:
            self._check(self._resolve(module, type_name), value, path, scope)
        finally:
            self._opaque = frozenset()

    # -- type resolution -------------------------------------------------------------------

    def _lookup(self, module: str, name: str) -> tuple[str, dict[str, Any]]:
        if name in self._types[module]:
            return module, self._types[module][name]
        # RAP-0105 imports from TAP-0312; nothing else is imported anywhere.
        return asn1.TAP_MODULE, self._types[asn1.TAP_MODULE][name]

    def _resolve(self, module: str, name: str) -> _Resolved:
        key = (module, name)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        names: list[str] = []
        sizes: list[tuple[str, Any]] = []
        current_module, definition = self._lookup(module, name)
        names.append(name)
        while True:
            if definition.get("size"):
                sizes.append((names[-1], definition["size"]))
            base = definition["type"]
            if base in _BUILTINS:
                break
            names.append(base)
            current_module, definition = self._lookup(current_module, base)
        resolved = _Resolved(current_module, names, sizes, base, definition)
        self._cache[key] = resolved
        return resolved

    def _resolve_member(self, module: str, member: dict[str, Any]) -> _Resolved:
        if member["type"] in _BUILTINS:
            sizes = [(member["name"], member["size"])] if member.get("size") else []
            return _Resolved(module, [], sizes, member["type"], member)
        return self._resolve(module, member["type"])

    # -- walking -----------------------------------------------------------------------------

    def _fail(self, path: str, reason: str, scope: str) -> None:
        raise CodecValidationError(path, reason, scope=scope)

    def _check(self, resolved: _Resolved, value: Any, path: str, scope: str) -> None:
        if self._opaque and not self._opaque.isdisjoint(resolved.names):
            return
        base = resolved.base
        if base == "SEQUENCE":
            self._check_sequence(resolved, value, path, scope)
        elif base == "SEQUENCE OF":
            if not isinstance(value, list):
                self._fail(path, f"expected a list, got {type(value).__name__}", scope)
            element = resolved.definition["element"]
            element_resolved = self._resolve_member(resolved.module, element)
            for index, item in enumerate(value):
                self._check(element_resolved, item, f"{path}[{index}]", scope)
        elif base == "CHOICE":
            self._check_choice(resolved, value, path, scope)
        elif base == "INTEGER":
            self._check_integer(resolved, value, path, scope)
        elif base == "OCTET STRING":
            self._check_octets(resolved, value, path, scope)
        else:  # pragma: no cover - TAP/RAP use no other built-in types
            self._fail(path, f"unsupported ASN.1 type {base}", scope)

    def _check_sequence(self, resolved: _Resolved, value: Any, path: str, scope: str) -> None:
        if not isinstance(value, dict):
            self._fail(path, f"expected a SEQUENCE (dict), got {type(value).__name__}", scope)
        owner = resolved.names[-1] if resolved.names else ""
        members = [m for m in resolved.definition["members"] if m is not None]
        known = {m["name"] for m in members}
        unknown = sorted(set(value) - known)
        if unknown:
            self._fail(f"{path}.{unknown[0]}", f"is not a member of {owner}", scope)
        for member in members:
            name = member["name"]
            member_path = f"{path}.{name}" if path else name
            if name not in value:
                mandatory_by_asn1 = not member.get("optional") and "default" not in member
                if mandatory_by_asn1 or (owner, name) in self._mandatory:
                    self._fail(member_path, f"mandatory item of {owner} is missing", scope)
                continue
            self._check(self._resolve_member(resolved.module, member), value[name], member_path, scope)

    def _check_choice(self, resolved: _Resolved, value: Any, path: str, scope: str) -> None:
        if not (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str)):
            self._fail(path, "expected a CHOICE as (alternative, value)", scope)
        alternatives = {m["name"]: m for m in resolved.definition["members"] if m is not None}
        name, inner = value
        if name not in alternatives:
            self._fail(path, f"unsupported alternative {name!r}", scope)
        self._check(self._resolve_member(resolved.module, alternatives[name]), inner, f"{path}.{name}", scope)

    def _check_integer(self, resolved: _Resolved, value: Any, path: str, scope: str) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            self._fail(path, f"expected an INTEGER, got {type(value).__name__}", scope)
        if not _INT64[0] <= value <= _INT64[1]:
            self._fail(path, f"INTEGER {value} does not fit in 8 octets", scope)
        for name in resolved.names:
            rule = _INTEGER_RULES.get(name)
            if rule is not None:
                reason = rule(value)
                if reason is not None:
                    self._fail(path, f"{name} {reason}" if reason.startswith("must") else reason, scope)

    def _check_octets(self, resolved: _Resolved, value: Any, path: str, scope: str) -> None:
        if not isinstance(value, bytes):
            self._fail(path, f"expected an OCTET STRING (bytes), got {type(value).__name__}", scope)
        if not value:
            # TD.58 2.2.1: zero-length elements must not be sent.
            self._fail(path, "must not be empty (zero-length elements are not allowed)", scope)
        for owner, size in resolved.sizes:
            if not _size_ok(len(value), size):
                self._fail(path, f"size {len(value)} octets breaks {owner} SIZE({_size_text(size)})", scope)
        for name in resolved.names:
            rule = _STRING_RULES.get(name)
            if rule is not None:
                reason = rule(value)
                if reason is not None:
                    self._fail(path, f"{reason}, got {value!r}", scope)


def _size_ok(actual: int, size: list[Any]) -> bool:
    for item in size:
        if isinstance(item, tuple):
            low, high = item
            if (low == "MIN" or actual >= low) and (high == "MAX" or actual <= high):
                return True
        elif actual == item:
            return True
    return False


def _size_text(size: list[Any]) -> str:
    return " | ".join(f"{item[0]}..{item[1]}" if isinstance(item, tuple) else str(item) for item in size)


_checker: ConstraintChecker | None = None


def checker() -> ConstraintChecker:
    """The process-wide checker (built lazily: it needs the parsed modules)."""
    global _checker
    if _checker is None:
        _checker = ConstraintChecker()
    return _checker
