"""The per-operator hash chain of DESIGN.md §5 (regulator contract; see docs/chain.md).

    entry        = Cdr.to_entry(): a JSON object with ASCII keys, integer minor-unit amounts,
                   UTC timestamps as strings, chain_seq (1, 2, …) and prev_hash
    prev_hash    = record_hash of the entry with chain_seq - 1; 64 ASCII zeros for chain_seq 1
    record_hash  = lowercase hex SHA-256 of the RFC 8785 (JCS) bytes of entry

`record_hash` is not part of the entry it names. A stored row is the entry plus its
``record_hash``; `verify_chain` recomputes everything from such rows and reports the first break.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import re
from typing import Any, Iterable, Mapping

from cdr_mediation.codecs.canonical_json import canonical_bytes
from cdr_mediation.domain.cdr import GENESIS_PREV_HASH, Cdr

# An entry that has not been placed in a chain yet (see `link`).
UNLINKED_SEQ = 0
UNLINKED_PREV_HASH = ""

_HEX64 = re.compile(r"[0-9a-f]{64}")


def record_hash(entry: Mapping[str, Any] | Cdr) -> str:
    """Lowercase hex SHA-256 of the RFC 8785 serialisation of the entry."""
    if isinstance(entry, Cdr):
        entry = entry.to_entry()
    return hashlib.sha256(canonical_bytes(entry)).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class ChainHead:
    """Where an operator's chain ends: the last chain_seq and its record_hash.

    The empty chain is ``chain_seq = 0`` with ``head_hash`` = 64 zeros, so the first entry gets
    ``chain_seq = 1`` and ``prev_hash`` = 64 zeros without a special case.
    """

    operator_id: str
    chain_seq: int
    head_hash: str

    @classmethod
    def genesis(cls, operator_id: str) -> "ChainHead":
        return cls(operator_id, 0, GENESIS_PREV_HASH)

    def advance(self, linked: Cdr, linked_hash: str) -> "ChainHead":
        """The head after `linked` (which must be the entry right after this head)."""
        if linked.chain_seq != self.chain_seq + 1 or linked.prev_hash != self.head_hash:
            raise ValueError("entry does not follow this chain head")
        return ChainHead(self.operator_id, linked.chain_seq, linked_hash)


def link(head: ChainHead, unlinked: Cdr) -> tuple[Cdr, str]:
    """Place an unlinked entry after `head`: returns (the linked entry, its record_hash).

    The new head is ``ChainHead(operator_id, cdr.chain_seq, record_hash)`` (`ChainHead.advance`).
    Refuses an entry of another operator or one that is already linked, so an entry can never be
    chained twice by mistake.
    """
    if unlinked.operator_id != head.operator_id:
        raise ValueError(
            f"entry of operator {unlinked.operator_id!r} "
            f"cannot join the chain of {head.operator_id!r}"
        )
    if unlinked.chain_seq != UNLINKED_SEQ or unlinked.prev_hash != UNLINKED_PREV_HASH:
        raise ValueError("entry is already linked")
    linked = unlinked.with_chain_position(*next_position(head))
    return linked, entry_hash(linked)


def next_position(head: ChainHead) -> tuple[int, str]:
    """(chain_seq, prev_hash) of the entry that follows `head` — the one rule `link` applies."""
    return head.chain_seq + 1, head.head_hash


def entry_hash(cdr: Cdr) -> str:
    """`record_hash` of a `Cdr` (its entry is JCS-safe by construction)."""
    return hashlib.sha256(canonical_bytes(cdr.to_entry())).hexdigest()


def entry_and_hash(cdr: Cdr) -> tuple[dict[str, Any], str]:
    """`cdr.to_entry()` and its `record_hash` (the entry is what the CDR record carries too)."""
    entry = cdr.to_entry()
    return entry, hashlib.sha256(canonical_bytes(entry)).hexdigest()


class BreakKind(str, enum.Enum):
    MALFORMED_ROW = "malformed_row"  # chain_seq / prev_hash / record_hash missing or ill-typed
    WRONG_OPERATOR = "wrong_operator"
    DUPLICATE_SEQ = "duplicate_seq"  # same chain_seq as the row before
    OUT_OF_ORDER = "out_of_order"  # chain_seq lower than the row before
    GAP = "gap"  # chain_seq higher than expected: the expected entry is missing
    PREV_HASH_MISMATCH = "prev_hash_mismatch"  # does not link to the row before
    HASH_MISMATCH = "hash_mismatch"  # stored record_hash is not the hash of the stored entry
    HEAD_MISMATCH = "head_mismatch"  # rows disagree with the signed checkpoint's head
    TRUNCATED = "truncated"  # rows end before the checkpoint's chain_seq


@dataclasses.dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first place where the rows stop being a valid chain.

    `seq` is the chain_seq the verifier expected at that point. `expected` / `found` are hashes
    for the hash kinds, decimal chain_seq values for the sequence kinds, operator ids for
    WRONG_OPERATOR. `index` is the 0-based position of the offending row in the input (None for
    checks made after the last row).
    """

    kind: BreakKind
    seq: int
    expected: str
    found: str
    index: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class ChainVerification:
    operator_id: str
    verified: int  # rows checked and found valid before the first break
    head: ChainHead  # head after the last valid row
    first_break: ChainBreak | None

    @property
    def ok(self) -> bool:
        return self.first_break is None


def _malformed(row: Any) -> str | None:
    if not isinstance(row, Mapping):
        return "row is not a mapping"
    seq = row.get("chain_seq")
    if type(seq) is not int or seq < 1:
        return "chain_seq is not a positive integer"
    for key in ("prev_hash", "record_hash"):
        value = row.get(key)
        if type(value) is not str or _HEX64.fullmatch(value) is None:
            return f"{key} is not 64 lowercase hex digits"
    if type(row.get("operator_id")) is not str:
        return "operator_id is not a string"
    return None


def verify_chain(
    operator_id: str,
    rows: Iterable[Mapping[str, Any]],
    *,
    start: ChainHead | None = None,
    expected_head: ChainHead | None = None,
) -> ChainVerification:
    """Recompute an operator's chain from stored rows (in the order given) up to the first break.

    Each row is an entry plus its stored ``record_hash``; everything except ``record_hash`` is
    hashed, exactly as stored (map storage columns to entry keys before calling). `start` is the
    head the rows continue from (default: the empty chain, so the first row must be chain_seq 1
    with the zero prev_hash). `expected_head` is the head from a signed checkpoint: the row with
    its chain_seq must carry its hash, and the rows must reach it.

    Per row, in this order: well-formed, operator, chain_seq (duplicate / out of order / gap),
    prev_hash links to the previous row's record_hash, record_hash equals the recomputed hash.
    Streaming: rows are not held in memory, so a swap of two adjacent rows is reported at the
    first of them as a gap (its chain_seq is missing at that position).
    """
    head = start if start is not None else ChainHead.genesis(operator_id)
    if head.operator_id != operator_id or (
        expected_head is not None and expected_head.operator_id != operator_id
    ):
        raise ValueError("start / expected_head belong to another operator")
    verified = 0

    def broken(kind: BreakKind, expected: Any, found: Any, index: int | None) -> ChainVerification:
        fault = ChainBreak(kind, head.chain_seq + 1, str(expected), str(found), index)
        return ChainVerification(operator_id, verified, head, fault)

    for index, row in enumerate(rows):
        problem = _malformed(row)
        if problem is not None:
            return broken(BreakKind.MALFORMED_ROW, "well-formed row", problem, index)
        if row["operator_id"] != operator_id:
            return broken(BreakKind.WRONG_OPERATOR, operator_id, row["operator_id"], index)
        seq = row["chain_seq"]
        expected_seq = head.chain_seq + 1
        if seq != expected_seq:
            if seq == head.chain_seq:
                kind = BreakKind.DUPLICATE_SEQ
            elif seq < head.chain_seq:
                kind = BreakKind.OUT_OF_ORDER
            else:
                kind = BreakKind.GAP
            return broken(kind, expected_seq, seq, index)
        if row["prev_hash"] != head.head_hash:
            return broken(BreakKind.PREV_HASH_MISMATCH, head.head_hash, row["prev_hash"], index)
        entry = {key: value for key, value in row.items() if key != "record_hash"}
        try:
            recomputed = hashlib.sha256(canonical_bytes(entry)).hexdigest()
        except (ValueError, TypeError, RecursionError) as exc:
            return broken(BreakKind.MALFORMED_ROW, "JSON-representable entry", exc, index)
        if row["record_hash"] != recomputed:
            return broken(BreakKind.HASH_MISMATCH, recomputed, row["record_hash"], index)
        if (
            expected_head is not None
            and seq == expected_head.chain_seq
            and recomputed != expected_head.head_hash
        ):
            # Internally consistent rows that are not the chain the checkpoint signed:
            # something at or before this row was rewritten together with its successors.
            return broken(BreakKind.HEAD_MISMATCH, expected_head.head_hash, recomputed, index)
        head = ChainHead(operator_id, seq, recomputed)
        verified += 1

    if expected_head is not None and head.chain_seq < expected_head.chain_seq:
        return broken(BreakKind.TRUNCATED, expected_head.chain_seq, head.chain_seq, None)
    return ChainVerification(operator_id, verified, head, None)
