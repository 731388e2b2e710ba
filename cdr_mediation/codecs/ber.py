"""The few BER primitives the hand-written TAP encoder needs (ITU-T X.690).

Only what TAP uses: APPLICATION-class tags, definite lengths in their shortest form, and
INTEGER / OCTET STRING contents. Shortest-form lengths and minimal two's-complement integers
are what DER mandates and what asn1tools emits, so bytes built here can be compared byte for
byte with asn1tools' encoder (tests/unit/codecs/test_fast_encoder.py does).
"""

from __future__ import annotations

APPLICATION = 0x40
CONSTRUCTED = 0x20


def tag(number: int, *, constructed: bool, tag_class: int = APPLICATION) -> bytes:
    """Identifier octets for a tag number (X.690 8.1.2): low form below 31, else base 128."""
    first = tag_class | (CONSTRUCTED if constructed else 0)
    if number < 31:
        return bytes([first | number])
    groups = [number & 0x7F]
    number >>= 7
    while number:
        groups.append(0x80 | (number & 0x7F))
        number >>= 7
    return bytes([first | 0x1F, *reversed(groups)])


def length(size: int) -> bytes:
    """Definite length octets in the shortest form (X.690 8.1.3, DER 10.1)."""
    if size < 0x80:
        return bytes([size])
    body = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def integer(value: int) -> bytes:
    """Content octets of an INTEGER: minimal two's complement (X.690 8.3.2).

    The magnitude bits of a negative value are those of its complement (-128 is one octet,
    0x80, not 0xff80)."""
    magnitude = value if value >= 0 else ~value
    return value.to_bytes(magnitude.bit_length() // 8 + 1, "big", signed=True)


def tlv(identifier: bytes, content: bytes) -> bytes:
    return identifier + length(len(content)) + content


def header_size(content_size: int, identifier: bytes) -> int:
    """Octets taken by identifier + length in front of `content_size` content octets."""
    return len(identifier) + len(length(content_size))


class SmallIntCache:
    """Pre-encoded `length + content` of small INTEGER values: most TAP integers are codes,
    counts and small amounts, and building them once saves the per-record arithmetic."""

    __slots__ = ("_encoded",)

    def __init__(self, limit: int = 1 << 16) -> None:
        self._encoded = [length(len(integer(v))) + integer(v) for v in range(limit)]

    def length_and_content(self, value: int) -> bytes:
        if 0 <= value < len(self._encoded):
            return self._encoded[value]
        content = integer(value)
        return length(len(content)) + content
