"""The checkpoint of one export file: what the HSM signs beside the file (DESIGN.md §5).

It states, for one operator's file: which records it holds (count, first/last `chain_seq`, the
RFC 6962 Merkle root over their `record_hash` values in chain order), where the chain stood at
its last record (`head_chain_seq`, `head_hash`), their totals (counts of its original CDRs and
its adjustments, and the amounts it charges — what its TAP audit totals say; without
adjustments the same figures as the hourly rollups, docs/adjustments.md §4), the file's identity (name, sequence number, cut-off
time) and the SHA-256 of the data file inside the ZIP. Its bytes are the RFC 8785 (JCS)
serialisation of `to_dict()`: any implementation can rebuild and check them.

`CheckpointBuilder` takes the file's entries one by one in chain order (a ten-million-record file
is never held in memory: the Merkle root is accumulated in O(log n)), refusing an entry of
another operator or out of chain order.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from cdr_mediation.codecs.canonical_json import canonical_bytes
from cdr_mediation.domain.merkle import EMPTY_ROOT, MerkleAccumulator
from cdr_mediation.domain.rollup import ADJUSTMENT_TYPES, ORIGINAL, STATUSES

CHECKPOINT_FORMAT = "cdr-mediation.checkpoint.v1"
NO_HEAD_HASH = "0" * 64  # an empty file: no record, no head


class CheckpointError(ValueError):
    """An entry that cannot be part of this file (operator, order, currency, shape)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Checkpoint:
    operator_id: str
    day: str  # YYYY-MM-DD (UTC, event time) the file covers
    file_name: str
    file_sequence: int
    cut_off: str  # format_utc; also the CMS signing time
    data_sha256: str  # of the data file inside the ZIP (the ZIP itself carries this checkpoint)
    record_count: int
    first_chain_seq: int | None
    last_chain_seq: int | None
    head_hash: str  # record_hash of the record at last_chain_seq (64 zeros for an empty file)
    merkle_root: str
    totals: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "operator_id": self.operator_id,
            "day": self.day,
            "file_name": self.file_name,
            "file_sequence": self.file_sequence,
            "cut_off": self.cut_off,
            "data_sha256": self.data_sha256,
            "record_count": self.record_count,
            "first_chain_seq": self.first_chain_seq,
            "last_chain_seq": self.last_chain_seq,
            "head_hash": self.head_hash,
            "merkle_root": self.merkle_root,
            "totals": dict(self.totals),
        }

    def canonical_bytes(self) -> bytes:
        return canonical_bytes(self.to_dict())

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> "Checkpoint":
        if value.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"format {value.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
        fields = {field.name for field in dataclasses.fields(cls)}
        if set(value) - {"format"} != fields:
            raise CheckpointError(f"checkpoint members differ: {sorted(set(value) ^ (fields | {'format'}))}")
        return cls(**{name: value[name] for name in fields})


@dataclasses.dataclass(frozen=True, slots=True)
class CheckpointPart:
    """What a `CheckpointBuilder` of the later part of a file accumulated, for the builder of
    the earlier part to take over (`CheckpointBuilder.extend`): a large file's checkpoint is
    built in two processes, and the result must equal the one-pass builder's."""

    operator_id: str
    day: str
    start: int  # leaves (entries) of the file before this part
    size: int
    subtrees: tuple[tuple[int, bytes], ...]  # MerkleAccumulator.subtrees()
    first_chain_seq: int | None
    last_chain_seq: int | None
    head_hash: str
    currency: str | None
    counts: Mapping[str, int]
    records: int
    billable_records: int
    billable_segments: int
    amount_minor: int
    tax_minor: int
    adjustments: Mapping[str, int]


class CheckpointBuilder:
    """Accumulates one file's entries in chain order; `finish` names the file and freezes.

    A builder made with `start` > 0 accumulates the later part of a file from its entry
    `start` on; its `part()` goes to the builder of the entries before (`extend`)."""

    __slots__ = ("operator_id", "day", "_merkle", "_first", "_last", "_head", "_currency", "_counts",
                 "_records", "_billable_records", "_billable_segments", "_amount", "_tax", "_adjustments")

    def __init__(self, operator_id: str, day: str, *, start: int = 0) -> None:
        self.operator_id, self.day = operator_id, day
        self._merkle = MerkleAccumulator(start)
        self._first: int | None = None
        self._last: int | None = None
        self._head = NO_HEAD_HASH
        self._currency: str | None = None
        self._counts = dict.fromkeys(STATUSES, 0)
        self._records = self._billable_records = self._billable_segments = self._amount = self._tax = 0
        self._adjustments = dict.fromkeys(ADJUSTMENT_TYPES, 0)

    def add(self, entry: Mapping[str, Any], record_hash: str) -> None:
        seq = entry["chain_seq"]
        if entry["operator_id"] != self.operator_id:
            raise CheckpointError(f"chain_seq {seq}: entry of {entry['operator_id']!r} in the file of {self.operator_id!r}")
        if self._last is not None and seq <= self._last:
            raise CheckpointError(f"chain_seq {seq} after {self._last}: entries must come in increasing chain order")
        currency = entry["currency"]
        if self._currency is None:
            self._currency = currency
        elif currency != self._currency:
            raise CheckpointError(f"chain_seq {seq}: currency {currency!r} in a {self._currency} file")
        self._merkle.add(record_hash)  # validates the hash's form
        if entry["record_type"] == ORIGINAL:
            self._counts[entry["status"]] += 1
            self._records += 1
            if entry["billable"]:
                self._billable_records += 1
                self._billable_segments += entry["segments"]
            self._amount += entry["amount_minor"]
            self._tax += entry["tax_minor"]
        elif entry["record_type"] in self._adjustments:
            # Amounts are what the file charges (its TAP audit totals): a CORRECT charges its
            # corrected amount, a VOID carries zero (docs/adjustments.md §4).
            self._adjustments[entry["record_type"]] += 1
            self._amount += entry["amount_minor"]
            self._tax += entry["tax_minor"]
        else:
            raise CheckpointError(f"chain_seq {seq}: unknown record_type {entry['record_type']!r}")
        if self._first is None:
            self._first = seq
        self._last, self._head = seq, record_hash

    @property
    def record_count(self) -> int:
        return self._merkle.size

    def totals(self) -> dict[str, Any]:
        return {
            "currency": self._currency,
            "counts": dict(self._counts),
            "records": self._records,
            "billable_records": self._billable_records,
            "billable_segments": self._billable_segments,
            "amount_minor": self._amount,
            "tax_minor": self._tax,
            "adjustments": dict(self._adjustments),
        }

    def part(self) -> CheckpointPart:
        return CheckpointPart(
            self.operator_id, self.day, self._merkle.start, self._merkle.size, tuple(self._merkle.subtrees()),
            self._first, self._last, self._head, self._currency, dict(self._counts), self._records,
            self._billable_records, self._billable_segments, self._amount, self._tax, dict(self._adjustments),
        )

    def extend(self, part: CheckpointPart) -> None:
        """Take over the entries `part` accumulated: the ones right after this builder's."""
        if (part.operator_id, part.day) != (self.operator_id, self.day):
            raise CheckpointError(f"a part of {part.operator_id!r} {part.day} in the file of "
                                  f"{self.operator_id!r} {self.day}")
        if part.start != self._merkle.start + self._merkle.size:
            raise CheckpointError(f"a part from entry {part.start} after {self._merkle.start + self._merkle.size} "
                                  "entries")
        if not part.size:
            return
        if self._last is not None and part.first_chain_seq <= self._last:
            raise CheckpointError(f"chain_seq {part.first_chain_seq} after {self._last}: entries must come in "
                                  "increasing chain order")
        if self._currency is not None and part.currency != self._currency:
            raise CheckpointError(f"chain_seq {part.first_chain_seq}: currency {part.currency!r} in a "
                                  f"{self._currency} file")
        if set(part.counts) != set(self._counts) or set(part.adjustments) != set(self._adjustments):
            raise CheckpointError("a part counted other statuses or adjustment types")
        if sum(1 << height for height, _ in part.subtrees) != part.size:
            raise CheckpointError(f"a part of {part.size} entries carried subtrees of other widths")
        for height, node in part.subtrees:
            self._merkle.add_subtree(height, node)
        for status, count in part.counts.items():
            self._counts[status] += count
        for kind, count in part.adjustments.items():
            self._adjustments[kind] += count
        self._records += part.records
        self._billable_records += part.billable_records
        self._billable_segments += part.billable_segments
        self._amount += part.amount_minor
        self._tax += part.tax_minor
        self._currency = self._currency if self._currency is not None else part.currency
        if self._first is None:
            self._first = part.first_chain_seq
        self._last, self._head = part.last_chain_seq, part.head_hash

    def finish(self, *, file_name: str, file_sequence: int, cut_off: str, data_sha256: str) -> Checkpoint:
        return Checkpoint(
            operator_id=self.operator_id, day=self.day, file_name=file_name, file_sequence=file_sequence,
            cut_off=cut_off, data_sha256=data_sha256, record_count=self.record_count,
            first_chain_seq=self._first, last_chain_seq=self._last, head_hash=self._head,
            merkle_root=self._merkle.root if self.record_count else EMPTY_ROOT, totals=self.totals(),
        )
