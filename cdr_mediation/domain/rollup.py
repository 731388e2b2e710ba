"""Hourly rollups per operator, closed by the stream: the pure part of the rollup agent (issue 4).

No clock, no randomness, no I/O: the outcome depends only on the state and the items given.
Operators' and auditors' summary: docs/rollups.md.

Input, per operator, in the order of the CDR topic: chain entries (``Cdr.to_entry()`` dicts with
their ``record_hash``) and explicit `ClockTick` records that advance an idle operator's clock.
After a crash upstream the topic may repeat byte-identical entries (``chain_seq`` repeats).

State — ONE table value per operator, so it changes atomically in the changelog:
`OperatorRollupState` (chain position, watermark, open hours, closed-through marker, pending
corrections, revision numbers).

Rules (each evaluated after every single entry or tick, never per batch, so the outcome is the
same whatever the batch boundaries upstream):

* Event time = ``done_at``. Hour window = ``[hh:00:00.000, hh+1:00:00.000)``; an hour is named by
  its start in `format_utc` form (``2026-11-01T10:00:00.000Z``).
* Exactness (DESIGN.md §4.5): ``chain_seq <= last_chain_seq`` is a re-emitted duplicate and is
  ignored (counted); ``last_chain_seq + 1`` is applied and its ``prev_hash`` must be the head
  hash; anything else raises `ChainDiscontinuity`. A duplicate of the head itself must carry the
  head hash (otherwise it is a fork, also `ChainDiscontinuity`). A tick at or before the
  watermark changes nothing. So re-applying any prefix of the stream changes nothing.
* Watermark = the largest event time seen (entries and ticks). Hour H closes when the watermark
  reaches ``H + 1 h + grace``. Hours close in order, from the first hour the operator had an
  event; hours without events in between are closed as empty rollups (revision 0).
* A closed hour's `RollupClosed` carries the chain head (seq and hash) *after* applying the item
  that advanced the watermark, and ``closed_by`` = ``"event"`` or ``"tick"``.
* Late event: an entry whose hour is already closed (``hour <= closed_through``). It is never
  dropped: it accumulates in ``pending_corrections[hour]`` (counted as ``late_events``). Pending
  corrections are emitted at the operator's next regular hour close (by an entry or a tick), in
  hour order and before that close, as deltas: revision = previous revision + 1, containing only
  the late entries since the previous revision, ``closed_by = "correction"``. An entry later than
  the clock but within the grace just joins its still-open hour.
* Backfill: an hour *before* the operator's first closed hour (``first_hour``) has never been
  emitted. A late entry there is emitted as that hour's revision 0 (``closed_by =
  "correction"``), together with empty revision-0 rollups for the hours between it and
  ``first_hour``, which then moves back. So the closed hours always form one gapless range
  ``[first_hour, closed_through]``, the same range `recompute_rollups` covers.

Order of effects for the caller (the agent), as for ingest: emit ``closed`` (sink idempotent by
(operator, hour, revision): a re-emission carries identical values), and only then write
``new_state``. A crash in between re-runs the items on the old state and re-emits the same closes.

Performance: per entry the hour is a string slice of ``done_at`` (validated by shape, the hour
part cached); the watermark is compared as a string with the precomputed close threshold of the
next hour; datetimes are built only once per distinct hour.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import Any, Iterable, Mapping, Union

from cdr_mediation.domain.cdr import GENESIS_PREV_HASH, DlrStatus, RecordType, format_utc, parse_utc
from cdr_mediation.domain.chain import BreakKind
from cdr_mediation.domain.source_position import NOTHING_APPLIED

DEFAULT_GRACE = dt.timedelta(hours=2)

# All five always present, in this order (DlrStatus declaration order).
STATUSES: tuple[str, ...] = tuple(status.value for status in DlrStatus)
ORIGINAL = RecordType.CDR.value
ADJUSTMENT_TYPES: tuple[str, ...] = (RecordType.VOID.value, RecordType.CORRECT.value)

CLOSED_BY_EVENT = "event"
CLOSED_BY_TICK = "tick"
CLOSED_BY_CORRECTION = "correction"
CLOSED_BY = (CLOSED_BY_EVENT, CLOSED_BY_TICK, CLOSED_BY_CORRECTION)

_UTC = dt.timezone.utc
_HOUR = dt.timedelta(hours=1)
_STATUS_INDEX = {status: index for index, status in enumerate(STATUSES)}
_HEX64 = re.compile(r"[0-9a-f]{64}")
# YYYY-MM-DDTHH (checked once per distinct hour) and :MM:SS.mmmZ (checked per timestamp).
_HOUR_PREFIX = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2})")
_TAIL = re.compile(r":[0-5][0-9]:[0-5][0-9]\.[0-9]{3}Z")
_HOUR_TAIL = ":00:00.000Z"
_NEVER = "~"  # sorts after every timestamp: a threshold beyond year 9999


class InvalidRollupInput(ValueError):
    """An item the rollup cannot account for (shape, type, operator, grace)."""


class CurrencyMismatch(InvalidRollupInput):
    """An entry in a currency other than the operator's (one currency per operator)."""

    def __init__(self, operator_id: str, chain_seq: int, expected: str, found: Any) -> None:
        self.operator_id, self.chain_seq, self.expected, self.found = operator_id, chain_seq, expected, found
        super().__init__(
            f"operator {operator_id!r}: entry chain_seq {chain_seq} is in {found!r}, "
            f"the operator's rollups are in {expected!r}"
        )


class ChainDiscontinuity(ValueError):
    """The entries do not continue the chain the state has applied.

    As `chain.ChainBreak`: `seq` is the chain_seq expected at that point (for a fork: the head's
    seq); `expected` / `found` are hashes for PREV_HASH_MISMATCH and DUPLICATE_SEQ (a fork: same
    seq as the head, other hash), decimal chain_seq values for GAP.
    """

    def __init__(self, operator_id: str, kind: BreakKind, seq: int, expected: str, found: str) -> None:
        self.operator_id, self.kind, self.seq, self.expected, self.found = operator_id, kind, seq, expected, found
        super().__init__(
            f"operator {operator_id!r}: chain discontinuity ({kind.value}) at chain_seq {seq}: "
            f"expected {expected}, found {found}"
        )


# --- hours as strings ---------------------------------------------------------------------------

# Bounded memos (cleared when full); they never change a result, only its cost.
_MEMO_LIMIT = 8192
_HOUR_OF_PREFIX: dict[str, str] = {}
_HOUR_AFTER: dict[str, str] = {}
_THRESHOLD: dict[tuple[str, int], str] = {}


def _memo_put(memo: dict, key: Any, value: Any) -> None:
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    memo[key] = value


def _hour_datetime(hour: str) -> dt.datetime:
    return dt.datetime(int(hour[0:4]), int(hour[5:7]), int(hour[8:10]), int(hour[11:13]), tzinfo=_UTC)


def _checked_hour_prefix(prefix: str, text: Any) -> str:
    """The hour start for ``YYYY-MM-DDTHH`` (validated as a real UTC hour)."""
    match = _HOUR_PREFIX.fullmatch(prefix)
    try:
        if match is None:
            raise ValueError
        dt.datetime(*(int(group) for group in match.groups()))
    except ValueError:
        raise InvalidRollupInput(
            f"timestamp {text!r} is not in the form YYYY-MM-DDTHH:MM:SS.mmmZ"
        ) from None
    hour = prefix + _HOUR_TAIL
    _memo_put(_HOUR_OF_PREFIX, prefix, hour)
    return hour


def hour_of(timestamp: str) -> str:
    """The start of the hour holding `timestamp` (a `format_utc` string); refuses other forms.

    ``hour_of("2026-11-01T10:00:00.000Z") == hour_of("2026-11-01T10:59:59.999Z")
    == "2026-11-01T10:00:00.000Z"``.
    """
    if type(timestamp) is not str or len(timestamp) != 24 or _TAIL.fullmatch(timestamp, 13) is None:
        raise InvalidRollupInput(f"timestamp {timestamp!r} is not in the form YYYY-MM-DDTHH:MM:SS.mmmZ")
    prefix = timestamp[:13]
    hour = _HOUR_OF_PREFIX.get(prefix)
    return hour if hour is not None else _checked_hour_prefix(prefix, timestamp)


def _check_hour_start(hour: Any) -> str:
    if hour_of(hour) != hour:
        raise InvalidRollupInput(f"{hour!r} is not the start of an hour (YYYY-MM-DDTHH:00:00.000Z)")
    return hour


def hour_after(hour: str) -> str:
    """The start of the next hour (`hour` is an hour start)."""
    following = _HOUR_AFTER.get(hour)
    if following is None:
        following = format_utc(_hour_datetime(hour) + _HOUR)
        _memo_put(_HOUR_AFTER, hour, following)
    return following


def _close_threshold(hour: str, grace_ms: int) -> str:
    """The watermark from which `hour` closes: ``hour + 1 h + grace`` in `format_utc` form."""
    key = (hour, grace_ms)
    threshold = _THRESHOLD.get(key)
    if threshold is None:
        try:
            threshold = format_utc(_hour_datetime(hour) + _HOUR + dt.timedelta(milliseconds=grace_ms))
        except OverflowError:
            threshold = _NEVER
        _memo_put(_THRESHOLD, key, threshold)
    return threshold


def grace_milliseconds(grace: dt.timedelta) -> int:
    """`grace` as whole milliseconds (the resolution of event times); refuses other values."""
    if not isinstance(grace, dt.timedelta) or grace < dt.timedelta(0):
        raise InvalidRollupInput(f"grace must be a non-negative timedelta, not {grace!r}")
    micros = (grace.days * 86_400 + grace.seconds) * 1_000_000 + grace.microseconds
    if micros % 1000:
        raise InvalidRollupInput(f"grace {grace!r} is not a whole number of milliseconds")
    return micros // 1000


# --- values -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class HourRollup:
    """Totals of one operator's entries whose ``done_at`` falls in one hour.

    `counts` (by status, all five keys always present), `records`, `billable_records`,
    `billable_segments` (segments of billable records), `amount_minor` and `tax_minor` (sums,
    minor units of `currency`) describe the records in force: an original CDR adds its values, a
    VOID takes out the version it supersedes, a CORRECT replaces it (docs/adjustments.md).
    `adjustments` counts the VOID and CORRECT entries.
    `first_chain_seq` / `last_chain_seq` are the smallest / largest chain_seq of all entries in
    the hour (originals and adjustments; not necessarily contiguous), None for an empty hour.
    A correction revision holds the same fields for its late entries only (a delta).

    `counts` and `adjustments` are plain dicts for JSON: treat them as read-only.
    """

    operator_id: str
    hour_start: str
    currency: str | None  # None only when nothing says which (no entries, no currency given)
    counts: Mapping[str, int]
    records: int
    billable_records: int
    billable_segments: int
    amount_minor: int
    tax_minor: int
    first_chain_seq: int | None
    last_chain_seq: int | None
    adjustments: Mapping[str, int]

    @classmethod
    def empty(cls, operator_id: str, hour_start: str, currency: str | None) -> "HourRollup":
        return cls(operator_id, hour_start, currency, dict.fromkeys(STATUSES, 0), 0, 0, 0, 0, 0, None, None,
                   dict.fromkeys(ADJUSTMENT_TYPES, 0))

    @property
    def hour_end(self) -> str:
        """Exclusive end of the window."""
        return hour_after(self.hour_start)

    @property
    def is_empty(self) -> bool:
        return self.first_chain_seq is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "operator_id": self.operator_id,
            "hour_start": self.hour_start,
            "currency": self.currency,
            "counts": {status: self.counts[status] for status in STATUSES},
            "records": self.records,
            "billable_records": self.billable_records,
            "billable_segments": self.billable_segments,
            "amount_minor": self.amount_minor,
            "tax_minor": self.tax_minor,
            "first_chain_seq": self.first_chain_seq,
            "last_chain_seq": self.last_chain_seq,
            "adjustments": {kind: self.adjustments[kind] for kind in ADJUSTMENT_TYPES},
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> "HourRollup":
        values = dict(value)
        counts, adjustments = dict(values.pop("counts")), dict(values.pop("adjustments"))
        if sorted(counts) != sorted(STATUSES) or sorted(adjustments) != sorted(ADJUSTMENT_TYPES):
            raise InvalidRollupInput("rollup counts / adjustments do not have exactly the expected keys")
        return cls(counts={s: counts[s] for s in STATUSES},
                   adjustments={k: adjustments[k] for k in ADJUSTMENT_TYPES}, **values)


@dataclasses.dataclass(frozen=True, slots=True)
class ClockTick:
    """An explicit clock record in the operator's stream: the watermark becomes at least `at`.

    Ticks travel in the same ordered stream as the entries, so a replay reproduces them.
    """

    operator_id: str
    at: str  # format_utc

    def to_dict(self) -> dict[str, Any]:
        return {"operator_id": self.operator_id, "at": self.at}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> "ClockTick":
        return cls(**value)


@dataclasses.dataclass(frozen=True, slots=True)
class RollupClosed:
    """An hour (revision 0) or a correction delta (revision >= 1) of one operator, closed.

    `chain_head_seq` / `chain_head_hash`: the operator's chain head when it closed, i.e. after
    the item that advanced the watermark was applied (for a tick: the head it found).
    `watermark`: the watermark that closed it. The sink key is `key` (operator, hour, revision);
    a re-emission after a crash has identical values.
    """

    rollup: HourRollup
    revision: int
    chain_head_seq: int
    chain_head_hash: str
    closed_by: str  # "event", "tick" or "correction"
    watermark: str

    @property
    def operator_id(self) -> str:
        return self.rollup.operator_id

    @property
    def hour_start(self) -> str:
        return self.rollup.hour_start

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.rollup.operator_id, self.rollup.hour_start, self.revision)

    def to_dict(self) -> dict[str, Any]:
        return {
            "operator_id": self.rollup.operator_id,
            "hour_start": self.rollup.hour_start,
            "hour_end": self.rollup.hour_end,
            "revision": self.revision,
            "closed_by": self.closed_by,
            "chain_head_seq": self.chain_head_seq,
            "chain_head_hash": self.chain_head_hash,
            "watermark": self.watermark,
            "rollup": self.rollup.to_dict(),
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> "RollupClosed":
        rollup = HourRollup.from_dict(value["rollup"])
        if (value["operator_id"], value["hour_start"]) != (rollup.operator_id, rollup.hour_start):
            raise InvalidRollupInput("rollup-closed record disagrees with its rollup's operator / hour")
        return cls(rollup, value["revision"], value["chain_head_seq"], value["chain_head_hash"],
                   value["closed_by"], value["watermark"])


# A day (UTC) closes with the revision 0 of its last hour (domain/day_close.py).
LAST_HOUR_SUFFIX = "T23:00:00.000Z"


def closes_a_day(closed: RollupClosed) -> bool:
    return closed.revision == 0 and closed.hour_start.endswith(LAST_HOUR_SUFFIX)


@dataclasses.dataclass(frozen=True, slots=True)
class OperatorRollupState:
    """Everything the rollup of one operator needs; one table value (see the module docstring).

    * `last_chain_seq` / `head_hash`: the chain head applied (the duplicate guard).
    * `watermark`: largest event time seen from entries and ticks (None before any).
    * `currency`: the operator's currency, from its first entry.
    * `grace_ms`: the grace this state was built with, fixed at the first apply (a different
      grace later would change which hours are late; it is refused).
    * `first_hour` / `closed_through`: every hour in ``[first_hour, closed_through]`` has been
      emitted (revision 0 at least), in order; None before the first close. Every hour up to
      `closed_through` counts as closed: an entry there is late.
    * `open_hours`: hour -> totals so far, for hours after `closed_through`.
    * `pending_corrections`: hour -> late entries not emitted yet (a delta).
    * `revisions`: hour -> last correction revision emitted (only hours that had corrections).
    * `days_closed`: how many days of this operator have closed (a day closes with the revision 0
      of its last hour; `domain.day_close` numbers them with this count, in closing order).
    * `applied_offset`: the CDR-topic offset of the last record applied to this state (set by the
      agent, `with_applied_offset`; -1 before any). Like the ingest state's, it orders an
      operator's states along the one path they all lie on (`source_position.furthest`), and the
      largest in a partition is where that partition resumes (`domain/source_position.py`).
    """

    operator_id: str
    last_chain_seq: int = 0
    head_hash: str = GENESIS_PREV_HASH
    watermark: str | None = None
    currency: str | None = None
    grace_ms: int | None = None
    first_hour: str | None = None
    closed_through: str | None = None
    open_hours: Mapping[str, HourRollup] = dataclasses.field(default_factory=dict)
    pending_corrections: Mapping[str, HourRollup] = dataclasses.field(default_factory=dict)
    revisions: Mapping[str, int] = dataclasses.field(default_factory=dict)
    days_closed: int = 0
    applied_offset: int = NOTHING_APPLIED

    @classmethod
    def initial(cls, operator_id: str) -> "OperatorRollupState":
        return cls(operator_id)

    def with_applied_offset(self, offset: int) -> "OperatorRollupState":
        return dataclasses.replace(self, applied_offset=offset)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (str, int, bool, None, list, dict); hours in ascending order."""
        return {
            "operator_id": self.operator_id,
            "last_chain_seq": self.last_chain_seq,
            "head_hash": self.head_hash,
            "watermark": self.watermark,
            "currency": self.currency,
            "grace_ms": self.grace_ms,
            "first_hour": self.first_hour,
            "closed_through": self.closed_through,
            "open_hours": {hour: self.open_hours[hour].to_dict() for hour in sorted(self.open_hours)},
            "pending_corrections": {
                hour: self.pending_corrections[hour].to_dict() for hour in sorted(self.pending_corrections)
            },
            "revisions": {hour: self.revisions[hour] for hour in sorted(self.revisions)},
            "days_closed": self.days_closed,
            "applied_offset": self.applied_offset,
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> "OperatorRollupState":
        values = dict(value)
        for name in ("open_hours", "pending_corrections"):
            values[name] = {hour: HourRollup.from_dict(rollup) for hour, rollup in sorted(values[name].items())}
        values["revisions"] = dict(sorted(values["revisions"].items()))
        return cls(**values)


@dataclasses.dataclass(frozen=True, slots=True)
class RollupStep:
    new_state: OperatorRollupState
    closed: tuple[RollupClosed, ...]  # in emission order (ascending hour within one evaluation)
    duplicates: int  # re-emitted entries ignored (chain_seq <= last_chain_seq)
    late_events: int  # applied entries whose hour was already closed (now pending corrections)
    applied: int  # entries applied (late ones included)


@dataclasses.dataclass(frozen=True, slots=True)
class RollupDifference:
    """One field of one hour that differs between two sets of rollups (`diff_rollups`)."""

    hour_start: str
    field: str  # e.g. "records", "counts.DELIVERED", "adjustments.VOID", or "presence"
    expected: Any
    found: Any

    def to_dict(self) -> dict[str, Any]:
        return {"hour_start": self.hour_start, "field": self.field, "expected": self.expected,
                "found": self.found}


# (entry, record_hash), (entry, record_hash, supersedes) for an adjustment, or a clock tick.
Item = Union[tuple[Mapping[str, Any], str], tuple[Mapping[str, Any], str, Mapping[str, Any]], ClockTick]


# --- the streaming step -------------------------------------------------------------------------


class _Acc:
    """Mutable totals of one hour while a step runs (frozen into a `HourRollup` at the end)."""

    __slots__ = ("counts", "records", "billable_records", "billable_segments", "amount", "tax", "first",
                 "last", "adjustments")

    def __init__(self) -> None:
        self.counts = [0, 0, 0, 0, 0]
        self.records = self.billable_records = self.billable_segments = self.amount = self.tax = 0
        self.first: int | None = None
        self.last: int | None = None
        self.adjustments = [0, 0]

    @classmethod
    def of(cls, rollup: HourRollup) -> "_Acc":
        acc = cls()
        acc.counts = [rollup.counts[status] for status in STATUSES]
        acc.records, acc.billable_records, acc.billable_segments = (
            rollup.records, rollup.billable_records, rollup.billable_segments)
        acc.amount, acc.tax = rollup.amount_minor, rollup.tax_minor
        acc.first, acc.last = rollup.first_chain_seq, rollup.last_chain_seq
        acc.adjustments = [rollup.adjustments[kind] for kind in ADJUSTMENT_TYPES]
        return acc

    def freeze(self, operator_id: str, hour: str, currency: str | None) -> HourRollup:
        return HourRollup(
            operator_id, hour, currency, dict(zip(STATUSES, self.counts)), self.records,
            self.billable_records, self.billable_segments, self.amount, self.tax, self.first, self.last,
            dict(zip(ADJUSTMENT_TYPES, self.adjustments)),
        )


def _bad_entry(seq: int, detail: str) -> InvalidRollupInput:
    return InvalidRollupInput(f"entry chain_seq {seq}: {detail}")


def _contribution(entry: Mapping[str, Any], seq: int) -> tuple[int, int, int, int, int]:
    """(status index, billable 0/1, billable segments, amount, tax) a record version adds."""
    index = _STATUS_INDEX.get(entry["status"])
    segments, amount, tax, billable = entry["segments"], entry["amount_minor"], entry["tax_minor"], entry["billable"]
    if index is None:
        raise _bad_entry(seq, f"unknown status {entry['status']!r}")
    if type(segments) is not int or type(amount) is not int or type(tax) is not int or type(billable) is not bool:
        raise _bad_entry(seq, "segments, amount_minor, tax_minor and billable must be integers and a boolean")
    return index, int(billable), segments if billable else 0, amount, tax


def _net_adjustment(acc: "_Acc", entry: Mapping[str, Any], supersedes: Mapping[str, Any] | None, seq: int) -> None:
    """An adjustment nets into its hour (docs/adjustments.md): the version it supersedes comes
    out — a VOID leaves nothing in its place, a CORRECT puts the corrected version in. `records`
    and the counts by status therefore count records in force; `adjustments` counts the entries.
    Every version of a record has the same ``done_at`` (a correction cannot move it), so the
    netting stays in one hour; in a closed hour it is a correction delta, with negative values
    where the delta takes something out."""
    if supersedes is None:
        raise _bad_entry(seq, f"a {entry['record_type']} entry must carry the version it supersedes")
    if supersedes["done_at"] != entry["done_at"] or supersedes["operator_id"] != entry["operator_id"]:
        raise _bad_entry(seq, "an adjustment and the version it supersedes differ in done_at or operator")
    if supersedes["currency"] != entry["currency"]:
        raise _bad_entry(seq, "an adjustment and the version it supersedes differ in currency")
    index, billable, segments, amount, tax = _contribution(supersedes, seq)
    acc.counts[index] -= 1
    acc.records -= 1
    acc.billable_records -= billable
    acc.billable_segments -= segments
    acc.amount -= amount
    acc.tax -= tax
    if entry["record_type"] == "CORRECT":
        index, billable, segments, amount, tax = _contribution(entry, seq)
        acc.counts[index] += 1
        acc.records += 1
        acc.billable_records += billable
        acc.billable_segments += segments
        acc.amount += amount
        acc.tax += tax
        acc.adjustments[1] += 1
    else:
        acc.adjustments[0] += 1


class _Run:
    """One `apply_entries` call: the state unpacked into mutable fields."""

    __slots__ = ("op", "grace_ms", "last_seq", "head_hash", "watermark", "currency", "first_hour",
                 "closed_through", "open", "pending", "revisions", "days_closed_before", "next_hour", "threshold",
                 "closed",
                 "duplicates", "late", "applied")

    def __init__(self, state: OperatorRollupState, grace_ms: int) -> None:
        self.op, self.grace_ms = state.operator_id, grace_ms
        self.last_seq, self.head_hash = state.last_chain_seq, state.head_hash
        self.watermark, self.currency = state.watermark, state.currency
        self.first_hour, self.closed_through = state.first_hour, state.closed_through
        self.open = {hour: _Acc.of(rollup) for hour, rollup in state.open_hours.items()}
        self.pending = {hour: _Acc.of(rollup) for hour, rollup in state.pending_corrections.items()}
        self.revisions = dict(state.revisions)
        self.days_closed_before = state.days_closed
        if self.closed_through is not None:
            self.next_hour: str | None = hour_after(self.closed_through)
        else:
            self.next_hour = min(self.open) if self.open else None
        self.threshold = None if self.next_hour is None else _close_threshold(self.next_hour, grace_ms)
        self.closed: list[RollupClosed] = []
        self.duplicates = self.late = self.applied = 0

    # The hot path: one entry. Everything but the accumulation is attribute reads and compares.
    def entry(self, entry: Mapping[str, Any], digest: str, supersedes: Mapping[str, Any] | None = None) -> None:
        seq = entry["chain_seq"]
        last_seq = self.last_seq
        if type(seq) is not int or seq < 1:
            raise InvalidRollupInput(f"entry chain_seq {seq!r} is not a positive integer")
        if seq <= last_seq:
            if seq == last_seq and digest != self.head_hash:
                raise ChainDiscontinuity(self.op, BreakKind.DUPLICATE_SEQ, seq, self.head_hash, str(digest))
            self.duplicates += 1
            return
        if seq != last_seq + 1:
            raise ChainDiscontinuity(self.op, BreakKind.GAP, last_seq + 1, str(last_seq + 1), str(seq))
        if entry["prev_hash"] != self.head_hash:
            raise ChainDiscontinuity(self.op, BreakKind.PREV_HASH_MISMATCH, seq, self.head_hash,
                                     str(entry["prev_hash"]))
        if type(digest) is not str or len(digest) != 64:
            raise _bad_entry(seq, f"record_hash {digest!r} is not 64 hex digits")
        if entry["operator_id"] != self.op:
            raise _bad_entry(seq, f"operator {entry['operator_id']!r} in the stream of {self.op!r}")
        currency = entry["currency"]
        if currency != self.currency:
            if self.currency is not None:
                raise CurrencyMismatch(self.op, seq, self.currency, currency)
            if type(currency) is not str or not currency:
                raise _bad_entry(seq, f"currency {currency!r} is not a currency code")
            self.currency = currency
        done_at = entry["done_at"]
        hour = hour_of(done_at)

        closed_through = self.closed_through
        if closed_through is not None and hour <= closed_through:
            acc = self.pending.get(hour)
            if acc is None:
                acc = self.pending[hour] = _Acc()
            self.late += 1
        else:
            acc = self.open.get(hour)
            if acc is None:
                acc = self.open[hour] = _Acc()
                if closed_through is None and (self.next_hour is None or hour < self.next_hour):
                    self.next_hour, self.threshold = hour, _close_threshold(hour, self.grace_ms)

        record_type = entry["record_type"]
        if record_type == ORIGINAL:
            index = _STATUS_INDEX.get(entry["status"])
            segments, amount, tax, billable = (
                entry["segments"], entry["amount_minor"], entry["tax_minor"], entry["billable"])
            if index is None:
                raise _bad_entry(seq, f"unknown status {entry['status']!r}")
            if type(segments) is not int or type(amount) is not int or type(tax) is not int:
                raise _bad_entry(seq, "segments, amount_minor and tax_minor must be integers")
            acc.counts[index] += 1
            acc.records += 1
            if billable is True:
                acc.billable_records += 1
                acc.billable_segments += segments
            elif billable is not False:
                raise _bad_entry(seq, f"billable {billable!r} is not a boolean")
            acc.amount += amount
            acc.tax += tax
        elif record_type == "VOID" or record_type == "CORRECT":
            _net_adjustment(acc, entry, supersedes, seq)
        else:
            raise _bad_entry(seq, f"unknown record_type {record_type!r}")
        if acc.first is None:
            acc.first = seq  # entries come in increasing chain_seq: the first one is the smallest
        acc.last = seq

        self.last_seq, self.head_hash = seq, digest
        self.applied += 1
        watermark = self.watermark
        if watermark is None or done_at > watermark:
            self.watermark = watermark = done_at
        threshold = self.threshold
        if threshold is not None and watermark >= threshold:
            self.close(CLOSED_BY_EVENT)

    def tick(self, tick: ClockTick) -> None:
        if tick.operator_id != self.op:
            raise InvalidRollupInput(f"clock tick of operator {tick.operator_id!r} in the stream of {self.op!r}")
        hour_of(tick.at)  # validates the form
        if self.watermark is not None and tick.at <= self.watermark:
            return
        self.watermark = tick.at
        if self.threshold is not None and tick.at >= self.threshold:
            self.close(CLOSED_BY_TICK)

    def close(self, closed_by: str) -> None:
        """Close every hour the watermark has passed, then flush pending corrections first."""
        regular: list[tuple[str, _Acc | None]] = []
        watermark, grace_ms = self.watermark, self.grace_ms
        while self.threshold is not None and watermark >= self.threshold:
            hour = self.next_hour
            regular.append((hour, self.open.pop(hour, None)))
            self.closed_through = hour
            if self.first_hour is None:
                self.first_hour = hour
            self.next_hour = hour_after(hour)
            self.threshold = _close_threshold(self.next_hour, grace_ms)
        if not regular:
            return
        if self.pending:
            self._flush_corrections()
        for hour, acc in regular:
            self._emit(hour, acc, 0, closed_by)

    def _flush_corrections(self) -> None:
        pending, first_hour = self.pending, self.first_hour
        hours = sorted(pending)
        if hours[0] < first_hour:
            # Backfill: hours before the first emitted hour get their revision 0 now.
            hour = hours[0]
            while hour < first_hour:
                self._emit(hour, pending.pop(hour, None), 0, CLOSED_BY_CORRECTION)
                hour = hour_after(hour)
            self.first_hour = hours[0]
        for hour in sorted(pending):
            revision = self.revisions.get(hour, 0) + 1
            self.revisions[hour] = revision
            self._emit(hour, pending[hour], revision, CLOSED_BY_CORRECTION)
        pending.clear()

    def _emit(self, hour: str, acc: _Acc | None, revision: int, closed_by: str) -> None:
        if acc is None:
            rollup = HourRollup.empty(self.op, hour, self.currency)
        else:
            rollup = acc.freeze(self.op, hour, self.currency)
        self.closed.append(RollupClosed(rollup, revision, self.last_seq, self.head_hash, closed_by, self.watermark))

    def step(self) -> RollupStep:
        op, currency = self.op, self.currency
        state = OperatorRollupState(
            operator_id=op,
            last_chain_seq=self.last_seq,
            head_hash=self.head_hash,
            watermark=self.watermark,
            currency=currency,
            grace_ms=self.grace_ms,
            first_hour=self.first_hour,
            closed_through=self.closed_through,
            open_hours={hour: self.open[hour].freeze(op, hour, currency) for hour in sorted(self.open)},
            pending_corrections={
                hour: self.pending[hour].freeze(op, hour, currency) for hour in sorted(self.pending)
            },
            revisions={hour: self.revisions[hour] for hour in sorted(self.revisions)},
            days_closed=self.days_closed_before + sum(1 for closed in self.closed if closes_a_day(closed)),
        )
        return RollupStep(state, tuple(self.closed), self.duplicates, self.late, self.applied)


def apply_entries(
    state: OperatorRollupState, items: Iterable[Item], grace: dt.timedelta = DEFAULT_GRACE
) -> RollupStep:
    """Apply one operator's items in stream order: ``(entry, record_hash)`` pairs and `ClockTick`s.

    Pure and all-or-nothing: on an error nothing is returned and `state` is unchanged (it is
    never mutated). Applying a stream in one call or in any slicing of consecutive calls gives
    the same final state and the same concatenated ``closed``. `record_hash` is trusted as given
    (its linkage is checked: the next entry's ``prev_hash`` must equal it); the verifier
    recomputes hashes.
    """
    grace_ms = grace_milliseconds(grace)
    if state.grace_ms is not None and state.grace_ms != grace_ms:
        raise InvalidRollupInput(
            f"operator {state.operator_id!r}: state was built with a grace of {state.grace_ms} ms, "
            f"not {grace_ms} ms (changing it would change which hours are late)"
        )
    run = _Run(state, grace_ms)
    entry, tick = run.entry, run.tick
    for item in items:
        if item.__class__ is ClockTick:
            tick(item)
        else:
            entry(*item)
    return run.step()


# --- reconciliation -----------------------------------------------------------------------------


def merge(parts: Iterable[HourRollup | RollupClosed]) -> HourRollup:
    """One hour's totals from its revisions: base (revision 0) + correction deltas.

    Accepts `HourRollup`s or `RollupClosed`s of one operator and hour. Two `RollupClosed` with
    the same revision are refused (a re-emission must be deduplicated by the sink, not summed).
    """
    rollups: list[HourRollup] = []
    revisions: set[int] = set()
    for part in parts:
        if isinstance(part, RollupClosed):
            if part.revision in revisions:
                raise InvalidRollupInput(f"revision {part.revision} of hour {part.hour_start} given twice")
            revisions.add(part.revision)
            part = part.rollup
        rollups.append(part)
    if not rollups:
        raise InvalidRollupInput("nothing to merge")
    operator_id, hour = rollups[0].operator_id, rollups[0].hour_start
    currencies = {rollup.currency for rollup in rollups} - {None}
    if any((rollup.operator_id, rollup.hour_start) != (operator_id, hour) for rollup in rollups):
        raise InvalidRollupInput("cannot merge rollups of different operators or hours")
    if len(currencies) > 1:
        raise InvalidRollupInput(f"cannot merge rollups in several currencies: {sorted(currencies)}")
    firsts = [rollup.first_chain_seq for rollup in rollups if rollup.first_chain_seq is not None]
    lasts = [rollup.last_chain_seq for rollup in rollups if rollup.last_chain_seq is not None]
    return HourRollup(
        operator_id=operator_id,
        hour_start=hour,
        currency=currencies.pop() if currencies else None,
        counts={status: sum(rollup.counts[status] for rollup in rollups) for status in STATUSES},
        records=sum(rollup.records for rollup in rollups),
        billable_records=sum(rollup.billable_records for rollup in rollups),
        billable_segments=sum(rollup.billable_segments for rollup in rollups),
        amount_minor=sum(rollup.amount_minor for rollup in rollups),
        tax_minor=sum(rollup.tax_minor for rollup in rollups),
        first_chain_seq=min(firsts) if firsts else None,
        last_chain_seq=max(lasts) if lasts else None,
        adjustments={kind: sum(rollup.adjustments[kind] for rollup in rollups) for kind in ADJUSTMENT_TYPES},
    )


def rollups_from_closes(closes: Iterable[RollupClosed]) -> dict[str, HourRollup]:
    """Hour -> merged totals of one operator's emitted closes (what the closed-rollup store holds).

    A close repeated with identical values (a re-emission) counts once; the same (hour,
    revision) with different values is refused.
    """
    by_key: dict[tuple[str, int], RollupClosed] = {}
    operators: set[str] = set()
    for close in closes:
        operators.add(close.operator_id)
        key = (close.hour_start, close.revision)
        prior = by_key.setdefault(key, close)
        if prior != close:
            raise InvalidRollupInput(f"hour {key[0]} revision {key[1]} emitted twice with different values")
    if len(operators) > 1:
        raise InvalidRollupInput(f"closes of several operators: {sorted(operators)}")
    hours: dict[str, list[RollupClosed]] = {}
    for hour, revision in sorted(by_key):
        hours.setdefault(hour, []).append(by_key[(hour, revision)])
    return {hour: merge(parts) for hour, parts in hours.items()}


def recompute_rollups(
    entries: Iterable[Mapping[str, Any]],
    grace: dt.timedelta | None = None,
    *,
    start_hour: str | None = None,
    end_hour: str | None = None,
    operator_id: str | None = None,
    currency: str | None = None,
) -> dict[str, HourRollup]:
    """Hour -> totals recomputed from one operator's stored entries (corrections merged).

    A reference computation for reconciliation, written independently of the streaming step
    (datetimes, no caches, no chain order needed). `entries` are chain entries, with or without
    ``record_hash``; an entry repeated with the same chain_seq and content counts once, the same
    chain_seq with other content is refused.

    The result covers every hour of a gapless range (empty hours as empty rollups):
    from `start_hour` (default: the first hour with an entry) to `end_hour` (default: the last
    hour with an entry or, with `grace`, the last hour the stream closes on these entries alone,
    i.e. ``hour + 1 h + grace <= max(done_at)``). Entries outside the range are left out.
    `operator_id` / `currency` name the operator when there may be no entries (and must agree
    with the entries otherwise).
    """
    by_seq: dict[int, dict[str, Any]] = {}
    for entry in entries:
        row = {key: value for key, value in entry.items() if key != "record_hash"}
        if operator_id is None:
            operator_id = row["operator_id"]
        elif row["operator_id"] != operator_id:
            raise InvalidRollupInput(f"entries of operators {operator_id!r} and {row['operator_id']!r}")
        if currency is None:
            currency = row["currency"]
        elif row["currency"] != currency:
            raise CurrencyMismatch(operator_id, row["chain_seq"], currency, row["currency"])
        prior = by_seq.setdefault(row["chain_seq"], row)
        if prior != row:
            raise InvalidRollupInput(f"two different entries with chain_seq {row['chain_seq']}")

    totals: dict[str, dict[str, Any]] = {}
    in_force: dict[str, Mapping[str, Any]] = {}  # original cdr_id -> its version in force
    latest: dt.datetime | None = None
    for seq in sorted(by_seq):
        row = by_seq[seq]
        moment = parse_utc(row["done_at"])
        if format_utc(moment) != row["done_at"]:
            raise InvalidRollupInput(f"entry chain_seq {seq}: done_at {row['done_at']!r} is not in format_utc form")
        latest = moment if latest is None or moment > latest else latest
        hour = format_utc(moment.replace(minute=0, second=0, microsecond=0))
        total = totals.setdefault(hour, {
            "counts": dict.fromkeys(STATUSES, 0), "records": 0, "billable_records": 0, "billable_segments": 0,
            "amount_minor": 0, "tax_minor": 0, "seqs": [], "adjustments": dict.fromkeys(ADJUSTMENT_TYPES, 0),
        })
        total["seqs"].append(seq)

        def count(version: Mapping[str, Any], sign: int) -> None:
            total["counts"][DlrStatus(version["status"]).value] += sign
            total["records"] += sign
            if version["billable"]:
                total["billable_records"] += sign
                total["billable_segments"] += sign * version["segments"]
            total["amount_minor"] += sign * version["amount_minor"]
            total["tax_minor"] += sign * version["tax_minor"]

        if row["record_type"] == ORIGINAL:
            count(row, 1)
            in_force[row["cdr_id"]] = row
        else:
            # Netted (docs/adjustments.md): the version in force comes out, a correction goes in.
            superseded = in_force.pop(row["ref_cdr_id"], None)
            if superseded is None:
                raise InvalidRollupInput(f"entry chain_seq {seq}: {row['record_type']} of {row['ref_cdr_id']}, "
                                         "which is not in force among these entries")
            count(superseded, -1)
            if row["record_type"] == RecordType.CORRECT.value:
                count(row, 1)
                in_force[row["ref_cdr_id"]] = row
            total["adjustments"][RecordType(row["record_type"]).value] += 1

    start = _check_hour_start(start_hour) if start_hour is not None else (min(totals) if totals else None)
    if end_hour is not None:
        end = _check_hour_start(end_hour)
    elif grace is not None:
        if latest is None:
            return {}
        limit = latest - dt.timedelta(milliseconds=grace_milliseconds(grace))
        end = format_utc(limit.replace(minute=0, second=0, microsecond=0) - _HOUR)
    else:
        end = max(totals) if totals else None
    if start is None or end is None or start > end:
        return {}
    if operator_id is None:
        raise InvalidRollupInput("no entries: name the operator_id for the empty hours")

    result: dict[str, HourRollup] = {}
    moment, last = parse_utc(start), parse_utc(end)
    while moment <= last:
        hour = format_utc(moment)
        total = totals.get(hour)
        if total is None:
            result[hour] = HourRollup.empty(operator_id, hour, currency)
        else:
            result[hour] = HourRollup(
                operator_id, hour, currency, total["counts"], total["records"], total["billable_records"],
                total["billable_segments"], total["amount_minor"], total["tax_minor"], min(total["seqs"]),
                max(total["seqs"]), total["adjustments"],
            )
        moment += _HOUR
    return result


_COMPARED_FIELDS: tuple[tuple[str, Any], ...] = (
    ("operator_id", lambda r: r.operator_id),
    ("currency", lambda r: r.currency),
    *((f"counts.{status}", lambda r, s=status: r.counts[s]) for status in STATUSES),
    ("records", lambda r: r.records),
    ("billable_records", lambda r: r.billable_records),
    ("billable_segments", lambda r: r.billable_segments),
    ("amount_minor", lambda r: r.amount_minor),
    ("tax_minor", lambda r: r.tax_minor),
    ("first_chain_seq", lambda r: r.first_chain_seq),
    ("last_chain_seq", lambda r: r.last_chain_seq),
    *((f"adjustments.{kind}", lambda r, k=kind: r.adjustments[k]) for kind in ADJUSTMENT_TYPES),
)


def diff_rollups(expected: Mapping[str, HourRollup], found: Mapping[str, HourRollup]) -> list[RollupDifference]:
    """Every difference between two hour -> rollup maps (e.g. recomputed vs. stored), by hour.

    An hour on one side only is one difference with field ``"presence"`` (``"present"`` /
    ``"absent"``); an empty rollup is not the same as a missing one (empty hours are closed
    explicitly). Otherwise one difference per differing field, in a fixed field order.
    """
    differences: list[RollupDifference] = []
    for hour in sorted(set(expected) | set(found)):
        want, got = expected.get(hour), found.get(hour)
        if want is None or got is None:
            differences.append(RollupDifference(
                hour, "presence", "absent" if want is None else "present", "absent" if got is None else "present"))
            continue
        for name, read in _COMPARED_FIELDS:
            a, b = read(want), read(got)
            if a != b or type(a) is not type(b):
                differences.append(RollupDifference(hour, name, a, b))
    return differences


__all__ = [
    "ADJUSTMENT_TYPES", "CLOSED_BY", "CLOSED_BY_CORRECTION", "CLOSED_BY_EVENT", "CLOSED_BY_TICK",
    "DEFAULT_GRACE", "ORIGINAL", "STATUSES", "ChainDiscontinuity", "ClockTick", "CurrencyMismatch",
    "HourRollup", "InvalidRollupInput", "OperatorRollupState", "RollupClosed", "RollupDifference",
    "RollupStep", "apply_entries", "diff_rollups", "grace_milliseconds", "hour_after", "hour_of", "merge",
    "recompute_rollups", "rollups_from_closes",
]
