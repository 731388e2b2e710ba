"""Strict JSON reading for contract inputs (DLRs, pricing snapshots).

RFC 8259 leaves two things open that matter for evidence: duplicate member names (parsers keep
the first, the last, or fail) and the non-JSON constants ``NaN``/``Infinity`` that Python's
decoder accepts by default. Both are refused here, so what we store is what any parser reads.
"""

from __future__ import annotations

import json
from typing import Any


class StrictJsonError(ValueError):
    """`kind` is ``invalid_encoding``, ``invalid_json`` or ``duplicate_key``."""

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind}: {detail}")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise StrictJsonError(
                    "duplicate_key", f"member {key[:70]!r} appears more than once"
                )
            seen.add(key)
    return obj


def _constant(name: str) -> Any:
    raise StrictJsonError("invalid_json", f"{name} is not valid JSON")


# The stdlib decoder, not orjson: only it can report duplicate member names.
_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_constant)


def loads_strict(raw: bytes) -> Any:
    """Decode UTF-8 JSON text; duplicate member names (at any depth) and NaN/Infinity fail."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise StrictJsonError("invalid_encoding", "payload is not valid UTF-8") from None
    try:
        return _DECODER.decode(text)
    except StrictJsonError:
        raise
    except (ValueError, RecursionError) as exc:
        raise StrictJsonError("invalid_json", str(exc)[:200]) from None
