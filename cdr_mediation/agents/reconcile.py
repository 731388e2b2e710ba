"""Reconciliation of the stored closed rollups with the CDRs they summarise (`cdrmed reconcile`).

A thin shell over the pure domain (`recompute_rollups`, `merge`, `diff_rollups`): read one UTC
day of an operator's CDR entries and closes from PostgreSQL, recompute the closed hours
independently from the entries, and report every difference. Nothing is written.

Which hours are compared, per operator (docs/rollups.md: the closed hours of an operator always
form one gapless range ``[first closed hour, last closed hour]``, and a close carries the chain
head it had seen):

* ``head`` = the largest ``chain_head_seq`` of the operator's stored closes (all days). Entries
  up to it have been seen by the closes, so each one in a closed hour must be accounted for.
  An entry after it in a closed hour is a late event whose correction revision is not emitted
  yet (pending until the operator's next regular close): reported as ``pending``, not as a
  difference. Entries after it in hours not closed yet simply belong to open hours.
* Compared range = the day's hours from ``max(day start, min(first closed hour, first hour of an
  entry up to head))`` through ``min(day's last hour, last closed hour)``, first and last closed
  hour over all the operator's stored closes. Every hour of that range must have a close; the
  stored value of an hour is the merge of its revisions, which must be exactly 0..n.
* Hours of the day after the last closed hour are ``open``: their entries are listed (per hour),
  never compared. An operator without any stored close has only open hours.

A difference is (operator, hour, field, expected, found), ``expected`` from the CDRs, ``found``
from the closes; field names are those of `diff_rollups` (``presence`` for an hour on one side
only) plus ``revisions`` (revisions of an hour not exactly 0..n, or not mergeable — the hour's
values are then not compared) and ``recompute`` (the stored entries themselves cannot be
summed, e.g. a second currency; hour None).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from cdr_mediation.domain.cdr import format_utc
from cdr_mediation.domain.rollup import (
    HourRollup,
    InvalidRollupInput,
    RollupClosed,
    diff_rollups,
    hour_of,
    merge,
    recompute_rollups,
)
from cdr_mediation.infra.postgres import rollup_store

_UTC = dt.timezone.utc


@dataclasses.dataclass(frozen=True)
class ReconcileDifference:
    operator_id: str
    hour_start: str | None
    field: str
    expected: Any
    found: Any

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class OperatorReconciliation:
    operator_id: str
    compared_from: str | None  # first hour compared (None: no closed hour in the day)
    compared_through: str | None  # last hour compared
    hours_compared: int
    entries: int  # the operator's entries with done_at in the day
    closes: int  # stored close rows (revisions) with hour_start in the day
    head_seq: int  # largest chain_head_seq of the operator's stored closes (0: none)
    open_hours: dict[str, int]  # hour after the compared range -> entries in it
    pending: dict[str, int]  # hour up to the last closed one -> entries after head_seq (late, not emitted yet)
    differences: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ReconcileReport:
    day: str  # YYYY-MM-DD, a UTC day
    operators: tuple[OperatorReconciliation, ...]
    differences: tuple[ReconcileDifference, ...]

    @property
    def ok(self) -> bool:
        return not self.differences

    def summary(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "ok": self.ok,
            "differences": len(self.differences),
            "operators": len(self.operators),
            "hours_compared": sum(op.hours_compared for op in self.operators),
            "hours_open": sum(len(op.open_hours) for op in self.operators),
            "entries": sum(op.entries for op in self.operators),
            "entries_pending": sum(sum(op.pending.values()) for op in self.operators),
            "closes": sum(op.closes for op in self.operators),
            "by_operator": [op.to_dict() for op in self.operators],
        }


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[00:00, next day 00:00) UTC of `day`."""
    start = dt.datetime(day.year, day.month, day.day, tzinfo=_UTC)
    return start, start + dt.timedelta(days=1)


async def reconcile_day(conn, day: dt.date, operator_id: str | None = None) -> ReconcileReport:
    """Compare the stored closes of `day` (UTC) with the recomputation from the stored CDRs.

    Per operator with CDR entries or closes that day (only `operator_id` if given).
    """
    start, end = day_bounds(day)
    operator_ids = [operator_id] if operator_id is not None else await rollup_store.operators_with_activity(
        conn, start, end)
    operators: list[OperatorReconciliation] = []
    differences: list[ReconcileDifference] = []
    for op in operator_ids:
        summary, found = await _reconcile_operator(conn, op, start, end)
        operators.append(summary)
        differences.extend(found)
    return ReconcileReport(day.isoformat(), tuple(operators), tuple(differences))


async def _reconcile_operator(
    conn, operator_id: str, start: dt.datetime, end: dt.datetime
) -> tuple[OperatorReconciliation, list[ReconcileDifference]]:
    entries = await rollup_store.fetch_entries_by_event_time(conn, operator_id, start, end)
    closes = await rollup_store.fetch_closes(conn, operator_id=operator_id, start=start, end=end)
    extent = await rollup_store.closed_extent(conn, operator_id)
    currency = await rollup_store.operator_currency(conn, operator_id)
    return compare_day(operator_id, start, end, entries, closes, extent, currency)


def compare_day(
    operator_id: str,
    start: dt.datetime,
    end: dt.datetime,
    entries: list[dict],
    closes: list[RollupClosed],
    extent: rollup_store.ClosedExtent | None,
    currency: str | None,
) -> tuple[OperatorReconciliation, list[ReconcileDifference]]:
    """The comparison itself (no I/O): see the module docstring for the rules."""
    day_first, day_last = format_utc(start), format_utc(end - dt.timedelta(hours=1))
    head = extent.head_seq if extent is not None else 0
    seen = [entry for entry in entries if entry["chain_seq"] <= head]

    lo = hi = None
    if extent is not None:
        first = extent.first_hour
        if seen:
            first = min(first, min(hour_of(entry["done_at"]) for entry in seen))
        lo, hi = max(day_first, first), min(day_last, extent.last_hour)
        if lo > hi:
            lo = hi = None

    open_hours: dict[str, int] = {}
    pending: dict[str, int] = {}
    for entry in entries:
        hour = hour_of(entry["done_at"])
        if hi is None or hour > hi:
            open_hours[hour] = open_hours.get(hour, 0) + 1
        elif entry["chain_seq"] > head:
            pending[hour] = pending.get(hour, 0) + 1

    differences: list[ReconcileDifference] = []
    compared = 0
    if lo is not None:
        try:
            expected = recompute_rollups(seen, start_hour=lo, end_hour=hi, operator_id=operator_id,
                                         currency=currency)
        except InvalidRollupInput as exc:
            expected = None
            differences.append(ReconcileDifference(operator_id, None, "recompute", None, str(exc)))
        if expected is not None:
            compared = len(expected)
            found, refused = _stored_rollups(closes)
            for hour, (want, got) in sorted(refused.items()):
                differences.append(ReconcileDifference(operator_id, hour, "revisions", want, got))
                expected.pop(hour, None)
            differences.extend(
                ReconcileDifference(operator_id, d.hour_start, d.field, d.expected, d.found)
                for d in diff_rollups(expected, found)
            )
    summary = OperatorReconciliation(
        operator_id=operator_id, compared_from=lo, compared_through=hi, hours_compared=compared,
        entries=len(entries), closes=len(closes), head_seq=head,
        open_hours=dict(sorted(open_hours.items())), pending=dict(sorted(pending.items())),
        differences=len(differences),
    )
    return summary, differences


def _stored_rollups(closes: list[RollupClosed]) -> tuple[dict[str, HourRollup], dict[str, tuple[Any, Any]]]:
    """Hour -> merged revisions; and hour -> (expected, found) for hours whose revisions are not
    exactly 0..n or cannot be merged (those hours are left out of the first map)."""
    by_hour: dict[str, list[RollupClosed]] = {}
    for close in closes:
        by_hour.setdefault(close.hour_start, []).append(close)
    merged: dict[str, HourRollup] = {}
    refused: dict[str, tuple[Any, Any]] = {}
    for hour, parts in by_hour.items():
        revisions = sorted(part.revision for part in parts)
        if revisions != list(range(len(revisions))):
            refused[hour] = (list(range(len(revisions))), revisions)
            continue
        try:
            merged[hour] = merge(parts)
        except InvalidRollupInput as exc:
            refused[hour] = ("mergeable revisions", str(exc))
    return merged, refused


__all__ = ["OperatorReconciliation", "ReconcileDifference", "ReconcileReport", "compare_day", "day_bounds",
           "reconcile_day"]
