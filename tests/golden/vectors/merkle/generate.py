#!/usr/bin/env python3
"""Generate the RFC 6962 Merkle vectors in this folder (see README.md).

Standard library only, and independent of cdr_mediation: the tree is the recursive definition
of RFC 6962 §2.1 and the proofs are PATH(m, D[n]) of §2.1.1, written out below.

    python tests/golden/vectors/merkle/generate.py     # rewrites merkle.json
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZES = [0, 1, 2, 3, 4, 5, 6, 7, 8, 13, 16, 17]
PROOF_SIZES = [1, 2, 3, 7, 13, 17]


def leaf_input(i: int) -> str:
    """Stand-in record hashes: SHA-256 of the ASCII text "record-<i>"."""
    return hashlib.sha256(f"record-{i}".encode()).hexdigest()


def mth(leaves: list[str]) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + bytes.fromhex(leaves[0])).digest()
    k = 1
    while k * 2 < n:  # largest power of two smaller than n
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def path(m: int, leaves: list[str]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return path(m, leaves[:k]) + [mth(leaves[k:])]
    return path(m - k, leaves[k:]) + [mth(leaves[:k])]


def build() -> dict[str, str]:
    leaves = [leaf_input(i) for i in range(max(SIZES))]
    trees = [{"size": n, "root": mth(leaves[:n]).hex()} for n in SIZES]
    proofs = [
        {"tree_size": n, "leaf_index": m, "record_hash": leaves[m],
         "root": mth(leaves[:n]).hex(), "proof": [p.hex() for p in path(m, leaves[:n])]}
        for n in PROOF_SIZES for m in range(n)
    ]
    good = next(p for p in proofs if p["tree_size"] == 13 and p["leaf_index"] == 9)
    flipped = good["proof"][1]
    flipped = ("0" if flipped[0] != "0" else "1") + flipped[1:]
    tampered = [
        {**good, "proof": [good["proof"][0], flipped, *good["proof"][2:]],
         "what": "first hex digit of proof[1] changed"},
        {**good, "record_hash": leaves[10], "what": "another record at leaf_index 9"},
        {**good, "leaf_index": 8, "what": "proof of leaf 9 presented for leaf 8"},
        {**good, "proof": good["proof"][:-1], "what": "last proof element dropped"},
    ]
    doc = {
        "leaves": leaves,
        "trees": trees,
        "inclusion_proofs": proofs,
        "tampered_proofs": [{**t, "valid": False} for t in tampered],
    }
    return {"merkle.json": json.dumps(doc, indent=2) + "\n"}


def main() -> None:
    for name, text in build().items():
        (HERE / name).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
