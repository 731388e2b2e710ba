"""RFC 8785 JSON Canonicalization Scheme (JCS): the bytes every chain hash is computed over.

`canonical_bytes(value)` returns the RFC 8785 serialisation of a JSON value given as Python
`dict` / `list` / `str` / `int` / `bool` / `None` (and `float`, via the reference path).

Two paths, one result:

* **Fast path** — ``orjson.dumps(value, option=OPT_SORT_KEYS)``. Taken only when every node of
  the value is in the domain where orjson's output is provably the RFC 8785 output:

  - ``None``, ``bool``, ``str`` (exact types; no subclasses such as ``str`` enums);
  - ``int`` (exact type) with ``-(2**53 - 1) <= n <= 2**53 - 1``: the range in which an IEEE 754
    double holds the integer exactly, so the ECMAScript number form RFC 8785 §3.2.2.3 requires
    is the plain decimal integer — which is what orjson writes;
  - ``list`` (exact type) of such values;
  - ``dict`` (exact type) whose keys are ASCII ``str``. RFC 8785 §3.2.3 sorts members by UTF-16
    code units; orjson sorts by UTF-8 bytes (= code points). Both orders agree for ASCII keys and
    can disagree beyond the BMP, so non-ASCII keys never take the fast path.

  Strings: both escape exactly ``"``, ``\\`` and U+0000..U+001F (``\\b \\t \\n \\f \\r`` short
  forms, otherwise ``\\u00xx`` with lowercase hex) and write everything else as raw UTF-8; both
  refuse lone surrogates. The property tests in tests/unit/codecs/test_canonical_json.py hold
  this equality against the `rfc8785` package on generated chain entries and on general JSON.

* **Reference path** — ``rfc8785.dumps(value)`` for everything else (floats, non-ASCII keys,
  tuples, subclasses, nesting deeper than orjson's 254 levels). It is tens of times slower but
  correct. Chain entries never need it: a `Cdr` entry is integers, booleans, null and strings
  under ASCII keys by construction. The chain verifier, though, must hash *whatever a stored row
  contains* (a tampered row may hold a float), so falling back is the right behaviour here
  rather than rejecting.

Values that JSON cannot represent (integers outside ±(2**53 - 1), NaN/Infinity, non-string keys,
lone surrogates, other types) raise `CanonicalizationError` from either path.
"""

from __future__ import annotations

from typing import Any

import orjson
import rfc8785

__all__ = ["CanonicalizationError", "canonical_bytes", "is_fast_path_value"]

CanonicalizationError = rfc8785.CanonicalizationError

# RFC 8785 §3.2.2.3 / I-JSON (RFC 7493 §2.2): the integers a double represents exactly.
_INT_MAX = 2**53 - 1
_INT_MIN = -_INT_MAX

_FAST_OPTIONS = orjson.OPT_SORT_KEYS


def is_fast_path_value(value: Any) -> bool:
    """True if `value` lies entirely in the domain where orjson's output equals RFC 8785."""
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                return False
            # Scalars inline: this runs for every field of every chain entry.
            item_kind = type(item)
            if item_kind is str or item is None or item_kind is bool:
                continue
            if item_kind is int:
                if not _INT_MIN <= item <= _INT_MAX:
                    return False
                continue
            if not is_fast_path_value(item):
                return False
        return True
    if kind is str or value is None or kind is bool:
        return True
    if kind is int:
        return _INT_MIN <= value <= _INT_MAX
    if kind is list:
        return all(is_fast_path_value(item) for item in value)
    return False


def canonical_bytes(value: Any) -> bytes:
    """RFC 8785 (JCS) serialisation of `value`, as UTF-8 bytes."""
    if is_fast_path_value(value):
        try:
            return orjson.dumps(value, option=_FAST_OPTIONS)
        except orjson.JSONEncodeError:
            # Lone surrogates (the reference refuses them too) or nesting deeper than orjson's
            # limit of 254 levels (the reference handles it): let the reference decide.
            pass
    return rfc8785.dumps(value)
