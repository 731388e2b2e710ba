"""When an operator's day (UTC, by event time) is closed for export — decided by the stream.

A day closes together with the revision-0 close of its last hour (23:00–24:00 UTC): at that
moment every hour of the day has its revision 0 (hours close in order, gapless), so the day's
rollups are final except for corrections of late events, which `domain.rollup` emits as later
revisions. The exporter (issue 6) builds the day's file when it sees this record.

It is derived from the hour closes, never from the wall clock, so a replay of the CDR topic
closes the same days with the same values. The chain head is the one of that last hour's close:
the head after the item that moved the watermark past the day's end plus the grace. A backfilled
day (a late event before the operator's first closed hour, `domain.rollup` "Backfill") closes
with ``closed_by = "correction"`` when its last hour gets its revision 0.

Days are numbered in closing order (`day_sequence`, 1, 2, …, counted in the rollup state), which
is the stream's order too: the exporter uses it as the file sequence number, so a replay numbers
every file the same, and a backfilled day gets the next number, not a calendar position.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable, Mapping

from cdr_mediation.domain.rollup import CLOSED_BY, RollupClosed, closes_a_day
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclasses.dataclass(frozen=True, slots=True)
class DayClosed:
    operator_id: str
    day: str  # YYYY-MM-DD (UTC)
    closed_by: str  # "event", "tick" or "correction", as the last hour's close
    chain_head_seq: int
    chain_head_hash: str
    watermark: str
    day_sequence: int  # 1, 2, …: this day's place in the operator's closing order

    @property
    def key(self) -> tuple[str, str]:
        return (self.operator_id, self.day)

    def to_dict(self) -> dict[str, Any]:
        return {
            "operator_id": self.operator_id,
            "day": self.day,
            "closed_by": self.closed_by,
            "chain_head_seq": self.chain_head_seq,
            "chain_head_hash": self.chain_head_hash,
            "watermark": self.watermark,
            "day_sequence": self.day_sequence,
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> "DayClosed":
        day = cls(value["operator_id"], value["day"], value["closed_by"], value["chain_head_seq"],
                  value["chain_head_hash"], value["watermark"], value["day_sequence"])
        if not isinstance(day.day_sequence, int) or isinstance(day.day_sequence, bool) or day.day_sequence < 1:
            raise ValueError(f"day_sequence must be a positive integer, not {day.day_sequence!r}")
        if not isinstance(day.day, str) or not _DAY.fullmatch(day.day):
            raise ValueError(f"day must be YYYY-MM-DD, not {day.day!r}")
        if day.closed_by not in CLOSED_BY:
            raise ValueError(f"closed_by {day.closed_by!r} is not one of {CLOSED_BY}")
        if not isinstance(day.chain_head_seq, int) or isinstance(day.chain_head_seq, bool) or day.chain_head_seq < 0:
            raise ValueError(f"chain_head_seq must be a non-negative integer, not {day.chain_head_seq!r}")
        return day


def days_closed(closes: Iterable[RollupClosed], days_closed_before: int) -> tuple[DayClosed, ...]:
    """The days these hour closes complete, in the order of the closes, numbered on from
    `days_closed_before` (the count in the operator's rollup state before the step)."""
    completing = [close for close in closes if closes_a_day(close)]
    return tuple(
        DayClosed(close.operator_id, close.hour_start[:10], close.closed_by, close.chain_head_seq,
                  close.chain_head_hash, close.watermark, days_closed_before + number)
        for number, close in enumerate(completing, start=1)
    )
