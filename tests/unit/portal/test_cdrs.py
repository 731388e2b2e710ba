"""The CDR list's cursors do not carry a number that can be recovered (portal/cdrs.py).

A cursor travels in URLs and logs. It names its filters by a digest; over a plain MSISDN that
digest could be reversed by hashing every number of a national plan (~10^9 tries). The number
therefore enters the digest as its keyed reference (the same HMAC the logs use)."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from cdr_mediation.observability.msisdn import MsisdnHasher
from cdr_mediation.portal import cursor
from cdr_mediation.portal.cdrs import _fingerprint, parse_list_query
from cdr_mediation.portal.errors import ApiError

NUMBER = "+447700900123"


def _cursor_for(hasher: MsisdnHasher, msisdn: str) -> str:
    filters, _, _ = parse_list_query({"msisdn": msisdn}, hasher)
    return cursor.encode("cdrs", ["op-a", 10], _fingerprint(filters, hasher))


def _digest_of(text: str) -> str:
    return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))["filters"]


def test_the_digest_of_a_number_cannot_be_recomputed_without_the_key() -> None:
    text = _cursor_for(MsisdnHasher(b"k" * 32), NUMBER)
    unkeyed = hashlib.sha256(json.dumps({"msisdn": NUMBER}, sort_keys=True, separators=(",", ":")).encode())
    assert _digest_of(text) != unkeyed.hexdigest()[:32]
    assert NUMBER.lstrip("+") not in base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
    # Without the key, guessing the right number gives another digest.
    assert _digest_of(text) != _digest_of(_cursor_for(MsisdnHasher(b"x" * 32), NUMBER))


def test_a_cursor_continues_the_same_search_and_no_other() -> None:
    hasher = MsisdnHasher(b"k" * 32)
    text = _cursor_for(hasher, NUMBER)
    _, after, _ = parse_list_query({"msisdn": NUMBER, "cursor": text}, hasher)
    assert after == ("op-a", 10)
    with pytest.raises(ApiError) as refused:
        parse_list_query({"msisdn": "+447700900124", "cursor": text}, hasher)
    assert refused.value.code == "bad_cursor"
