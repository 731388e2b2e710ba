"""MSISDN references for logs: a keyed hash, never the number.

A plain SHA-256 of a 9–12 digit number is reversed by trying every number (10^12 hashes is
minutes on a GPU), so the reference is HMAC-SHA256 under a per-deployment secret key. The same
MSISDN gives the same reference within a deployment, which keeps logs joinable for support.
"""

from __future__ import annotations

import hashlib
import hmac
import re

# An MSISDN-like token: optional "+", 8–15 digits, not part of a longer word or id — so digit runs
# inside hashes, UUIDs or identifiers (hex "…cba1234567890ab…") are left intact.
# Decimal fractions ("runtime=4.884623619") are not numbers either: no digit-dot before or after.
MSISDN_PATTERN = re.compile(r"(?<![\w+-])(?<!\d\.)\+?\d{8,15}(?!\w)(?!\.\d)")
REFERENCE_PREFIX = "msisdn:"


class MsisdnHasher:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the MSISDN hash key must be at least 16 bytes")
        self._key = key

    def reference(self, msisdn: str) -> str:
        digits = msisdn.lstrip("+")
        mac = hmac.new(self._key, digits.encode(), hashlib.sha256).hexdigest()
        return f"{REFERENCE_PREFIX}{mac[:16]}"

    def redact(self, text: str) -> str:
        """Replace every MSISDN-like digit run in free text by its reference."""
        return MSISDN_PATTERN.sub(lambda match: self.reference(match.group(0)), text)
