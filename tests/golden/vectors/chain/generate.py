#!/usr/bin/env python3
"""Generate the hash-chain verification vectors in this folder (see README.md).

Deliberately independent of cdr_mediation: entries are written out literally, JCS comes from the
`rfc8785` reference package, hashes from hashlib, and every expected break is stated from what
this script did to the rows. tests/golden/vectors/test_golden_vectors.py checks that the files
are what this script writes and that cdr_mediation agrees with them.

    python tests/golden/vectors/chain/generate.py      # rewrites chain.json and tampered.json
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import rfc8785

HERE = Path(__file__).resolve().parent
OPERATOR = "op-a"
ZERO = "0" * 64


def jcs(entry: dict[str, Any]) -> bytes:
    return rfc8785.dumps(entry)


def record_hash(entry: dict[str, Any]) -> str:
    return hashlib.sha256(jcs(entry)).hexdigest()


def cdr(n: int, **fields: Any) -> dict[str, Any]:
    """Entry fields of a CDR, except chain_seq and prev_hash."""
    base = {
        "record_type": "CDR",
        "cdr_id": f"00000000-0000-5000-8000-{n:012d}",
        "dlr_id": f"dlr-{n:04d}",
        "message_id": f"msg-{n:04d}",
        "tenant_id": "tenant-1",
        "operator_id": OPERATOR,
        "sender_id": "ACME",
        "msisdn": "+4915123456789",
        "status": "DELIVERED",
        "submitted_at": "2026-04-10T10:15:00.123Z",
        "done_at": "2026-04-10T10:15:03.456Z",
        "segments": 1,
        "billable": True,
        "unit_price_minor": 5,
        "amount_minor": 5,
        "tax_minor": 1,
        "currency": "EUR",
        "pricing_version": "op-a/default/2026-01",
        "error_code": None,
        "smsc_id": "smsc-fra-1",
        "ref_cdr_id": None,
        "ticket_ref": None,
        "actor": None,
    }
    base.update(fields)
    return base


CONTENTS = [
    cdr(1),
    cdr(2, status="EXPIRED", billable=False, amount_minor=0, tax_minor=0, error_code="0x00000062",
        segments=2, done_at="2026-04-12T10:15:00.000Z"),
    cdr(3, sender_id='Say "Hi"\\ok', segments=3, amount_minor=15, tax_minor=3),  # JCS escapes
    cdr(4, tenant_id="tenant-7", unit_price_minor=4, amount_minor=1020, tax_minor=204,
        segments=255, pricing_version="op-a/tenant-7/2026-03"),
    cdr(5, status="UNKNOWN", billable=False, amount_minor=0, tax_minor=0,
        submitted_at="2026-04-10T23:59:59.999Z", done_at="2026-04-11T00:00:59.000Z"),
]


def build_chain() -> list[dict[str, Any]]:
    rows, prev = [], ZERO
    for seq, content in enumerate(CONTENTS, start=1):
        entry = {**content, "chain_seq": seq, "prev_hash": prev}
        digest = record_hash(entry)
        rows.append({"entry": entry, "jcs": jcs(entry).decode("utf-8"), "record_hash": digest})
        prev = digest
    return rows


def stored(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as storage holds them: the entry plus its record_hash."""
    return [{**row["entry"], "record_hash": row["record_hash"]} for row in rows]


def tampered_cases(chain: list[dict[str, Any]]) -> list[dict[str, Any]]:
    good = stored(chain)
    h = [row["record_hash"] for row in chain]  # h[i] is the hash of chain_seq i + 1
    head = {"operator_id": OPERATOR, "chain_seq": len(good), "head_hash": h[-1]}
    cases = []

    def case(name: str, description: str, rows: list[dict[str, Any]], kind: str, seq: int,
             expected: Any, found: Any, expected_head: dict[str, Any] | None = None) -> None:
        cases.append({
            "name": name,
            "description": description,
            "expected_head": expected_head,
            "rows": rows,
            "first_break": {"kind": kind, "seq": seq, "expected": str(expected),
                            "found": str(found)},
        })

    rows = copy.deepcopy(good)
    rows[2]["amount_minor"] = 1
    case("amount_changed", "amount_minor of chain_seq 3 changed, nothing recomputed",
         rows, "hash_mismatch", 3, record_hash({k: v for k, v in rows[2].items()
                                                 if k != "record_hash"}), h[2])

    rows = copy.deepcopy(good)
    rows[1]["record_hash"] = "f" * 64
    case("record_hash_changed", "stored record_hash of chain_seq 2 replaced",
         rows, "hash_mismatch", 2, h[1], "f" * 64)

    rows = copy.deepcopy(good)
    rows[3]["prev_hash"] = h[1]
    case("prev_hash_changed", "chain_seq 4 points at chain_seq 2 instead of 3",
         rows, "prev_hash_mismatch", 4, h[2], h[1])

    rows = copy.deepcopy(good)
    rows[1]["msisdn"] = "+4915100000000"
    entry = {k: v for k, v in rows[1].items() if k != "record_hash"}
    rows[1]["record_hash"] = record_hash(entry)
    case("changed_and_rehashed", "msisdn of chain_seq 2 changed and its record_hash recomputed",
         rows, "prev_hash_mismatch", 3, rows[1]["record_hash"], h[1])

    rows = copy.deepcopy(good)
    del rows[2]
    case("deleted", "chain_seq 3 deleted", rows, "gap", 3, 3, 4)

    rows = copy.deepcopy(good)
    rows[1], rows[2] = rows[2], rows[1]
    case("swapped", "rows of chain_seq 2 and 3 swapped", rows, "gap", 2, 2, 3)

    rows = copy.deepcopy(good)
    rows.insert(2, copy.deepcopy(good[1]))
    case("duplicated", "chain_seq 2 stored twice", rows, "duplicate_seq", 3, 3, 2)

    rows = copy.deepcopy(good)
    rows.append(copy.deepcopy(good[0]))
    case("out_of_order", "chain_seq 1 repeated after chain_seq 5", rows, "out_of_order", 6, 6, 1)

    rows = copy.deepcopy(good)
    rows[0]["operator_id"] = "op-b"
    case("wrong_operator", "chain_seq 1 claims another operator", rows, "wrong_operator", 1,
         OPERATOR, "op-b")

    case("truncated", "last row missing; the signed checkpoint says chain_seq 5",
         copy.deepcopy(good[:-1]), "truncated", 5, 5, 4, expected_head=head)

    rows, prev = copy.deepcopy(good[:3]), h[2]
    for seq, content in enumerate(CONTENTS[3:], start=4):
        entry = {**content, "amount_minor": 0, "chain_seq": seq, "prev_hash": prev}
        prev = record_hash(entry)
        rows.append({**entry, "record_hash": prev})
    case("rewritten_tail", "chain_seq 4-5 rewritten with recomputed hashes; only the signed "
         "checkpoint shows it", rows, "head_mismatch", 5, h[-1], prev, expected_head=head)
    return cases


def dump(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def build() -> dict[str, str]:
    chain = build_chain()
    return {
        "chain.json": dump({
            "operator_id": OPERATOR,
            "entries": chain,
            "head": {"chain_seq": len(chain), "head_hash": chain[-1]["record_hash"]},
        }),
        "tampered.json": dump({"operator_id": OPERATOR, "cases": tampered_cases(chain)}),
    }


def main() -> None:
    for name, text in build().items():
        (HERE / name).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
