"""Which chain entries an export file holds: the one rule for the build, the rebuild, the
verifier and the proofs (docs/adjustments.md §4, docs/export.md).

An operator's days close in the stream's order (`DayClosed.day_sequence` k = 1, 2, …), each at a
chain head h_k, and h_k never decreases with k. File k, of day D_k, holds the entries with
``chain_seq <= h_k`` that are either

1. of its day: ``done_at`` in D_k; or
2. carried: ``h_(k-1) < chain_seq`` and ``done_at`` in a day closed by an earlier file — entries
   that reached the chain after their own day's file was closed: late CDRs beyond the grace, and
   adjustments (VOID, CORRECT) of records of closed days.

Every entry is in exactly one file. An entry of day d at chain_seq s: if d closes at a head
h_d >= s it is in d's file by rule 1 and in no other (rule 2 needs h_(k-1) < s <= h_d <= h_(k-1)
for a k after d's file); otherwise d closed before s arrived, and rule 2 puts it in the one file
k with h_(k-1) < s <= h_k — which exists once the next day closes. An adjustment of a record whose
day is still open travels with that day's file; one of a closed day goes into the next file.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class FileScope:
    operator_id: str
    day: str  # D_k, YYYY-MM-DD (UTC)
    through_seq: int  # h_k: the chain head when the day closed
    after_seq: int  # h_(k-1): the head of the previous close (0 for the first file)
    carried_days: tuple[str, ...]  # the days of files 1 … k-1, sorted

    def holds(self, chain_seq: int, done_day: str) -> bool:
        if chain_seq > self.through_seq:
            return False
        if done_day == self.day:
            return True
        return chain_seq > self.after_seq and done_day in self.carried_days


def file_scope(operator_id: str, day: str, day_sequence: int, through_seq: int,
               earlier_closes: dict[int, tuple[str, int]]) -> FileScope:
    """The scope of file `day_sequence` from the earlier closes of its operator: day_sequence →
    (day, chain_head_seq). Every earlier close must be known — without file k-1 nobody can say
    which late entries file k carries — and heads must not decrease (ValueError otherwise)."""
    missing = [number for number in range(1, day_sequence) if number not in earlier_closes]
    if missing:
        raise ValueError(f"file {day_sequence} of {operator_id}: earlier closes {missing[:5]} are unknown")
    after_seq = earlier_closes[day_sequence - 1][1] if day_sequence > 1 else 0
    if after_seq > through_seq:
        raise ValueError(f"file {day_sequence} of {operator_id}: the previous close's head {after_seq} "
                         f"is past this close's {through_seq}")
    carried = tuple(sorted(earlier_closes[number][0] for number in range(1, day_sequence)))
    return FileScope(operator_id, day, through_seq, after_seq, carried)
