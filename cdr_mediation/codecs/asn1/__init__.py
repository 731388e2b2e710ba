"""The ASN.1 modules shipped with the package, compiled once per process.

`tap_0312_subset.asn` and `rap_0105.asn` are the project's own copies (see their provenance
headers); production code reads nothing outside the package. Compiling takes ~0.3 s, so the
results are cached.
"""

from __future__ import annotations

import copy
import functools
import re
from importlib import resources
from typing import Any

import asn1tools

TAP_MODULE = "TAP-0312"
RAP_MODULE = "RAP-0105"
_TAP_FILE = "tap_0312_subset.asn"
_RAP_FILE = "rap_0105.asn"


def _text(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="ascii")


@functools.cache
def _parsed() -> dict[str, Any]:
    return asn1tools.parse_string(_text(_TAP_FILE) + "\n" + _text(_RAP_FILE))


@functools.cache
def spec() -> Any:
    """The BER codec for TAP-0312 (subset) and RAP-0105 together (RAP imports from TAP)."""
    return asn1tools.compile_dict(copy.deepcopy(_parsed()), "ber")


@functools.cache
def parsed_types() -> dict[str, dict[str, Any]]:
    """Parsed type definitions per module: {module: {type name: definition}}."""
    return {name: module["types"] for name, module in _parsed().items()}


_TYPE_START = re.compile(r"^([A-Za-z][\w-]*) ::=")
_MANDATORY_MEMBER = re.compile(r"^\s+(\w+)\s+\S+.*--\s*\*m\.m\.")


@functools.cache
def tap_mandatory_members() -> frozenset[tuple[str, str]]:
    """(type, member) pairs that TD.57 marks `-- *m.m.` in the shipped TAP module.

    The ASN.1 declares almost everything OPTIONAL so that RAP can return incomplete records;
    the real obligations are these comments, read straight from the module text so the rule
    set cannot drift from the ASN.1 it describes.
    """
    pairs: set[tuple[str, str]] = set()
    current: str | None = None
    for line in _text(_TAP_FILE).splitlines():
        start = _TYPE_START.match(line)
        if start:
            current = start.group(1)
            continue
        member = _MANDATORY_MEMBER.match(line)
        if member and current is not None:
            pairs.add((current, member.group(1)))
    return frozenset(pairs)


def module_text(module: str) -> str:
    """The shipped ASN.1 text of `TAP-0312` or `RAP-0105` (for documentation and tests)."""
    return _text({TAP_MODULE: _TAP_FILE, RAP_MODULE: _RAP_FILE}[module])
