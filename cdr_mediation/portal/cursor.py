"""Opaque, validated page cursors for the portal's list endpoints.

A cursor names the last item of a page (its sort key) and the filters the page was asked with:

    base64url( canonical JSON {"v": 1, "list": "cdrs", "after": [...], "filters": "<digest>"} )

`filters` is the first 128 bits of SHA-256 over the canonical JSON of the filters, not the
filters themselves: a cursor travels in URLs and an MSISDN filter must not ride along in clear.
Callers put a number into the filters as its keyed reference (portal/cdrs.py), so the digest
cannot be reversed by hashing every number of a numbering plan.
A cursor is refused (400 ``bad_cursor``) if it does not decode, is of another list or version, or
was made for other filters — a page of one search is never continued as another search.

Validated, not signed: every role may read every item of these lists, so a forged cursor can
only skip to a position the caller could have asked for with other filters; a signature would
need a key shared by all portal replicas for no gain in what is disclosed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cdr_mediation.portal.errors import ApiError

VERSION = 1
MAX_LENGTH = 1024


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def filters_digest(filters: Mapping[str, Any]) -> str:
    present = {key: value for key, value in filters.items() if value is not None}
    return hashlib.sha256(_canonical(present)).hexdigest()[:32]


def encode(list_name: str, after: Sequence[Any], filters: Mapping[str, Any]) -> str:
    document = {"v": VERSION, "list": list_name, "after": list(after), "filters": filters_digest(filters)}
    return base64.urlsafe_b64encode(_canonical(document)).decode("ascii").rstrip("=")


def decode(text: str, list_name: str, filters: Mapping[str, Any],
           check_after: Callable[[list], bool]) -> list:
    """The `after` position of a cursor made by `encode(list_name, …, filters)`."""
    if len(text) > MAX_LENGTH:
        raise _bad("the cursor is longer than any cursor this portal makes")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        document = json.loads(raw)
    except (binascii.Error, ValueError):
        raise _bad("the cursor is not one this portal made (it does not decode); start again without it") from None
    if (not isinstance(document, dict) or set(document) != {"v", "list", "after", "filters"}
            or document["v"] != VERSION or document["list"] != list_name
            or not isinstance(document["after"], list) or not check_after(document["after"])):
        raise _bad(f"the cursor is not a cursor of {list_name} made by this portal; start again without it")
    if document["filters"] != filters_digest(filters):
        raise _bad("the cursor was made for other filters: repeat the same filters with it "
                   "(limit may change), or start again without it")
    return document["after"]


def _bad(message: str) -> ApiError:
    return ApiError(400, "bad_cursor", message)
