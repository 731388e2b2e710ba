"""Record formats on the Kafka topics (DESIGN.md §10: the unit that flows is a batch).

- `dlr.v1`: one record = an ordered batch of one operator's DLRs, each kept as the exact bytes
  upstream sent (so a dead letter raised later still carries the original bytes), or one
  adjustment request (`adjustment.v1`, copied there from the adjustment topic by the forwarder).
- `cdr.adjustment.v1`: one record = one adjustment request (`adjustment.v1`), from the outbox.
- `cdr.v1`: one record = an ordered run of one operator's chain entries with their hashes; an
  adjustment's entry also carries ``supersedes``, the version it replaces (for the rollups). Also
  an operator's clock tick, or an adjustment request the chain refused (`adjustment-refused.v1`,
  for the store: the request's status).
- `dlr.dlq.v1`: one record = one rejected input: value = the original bytes, the reason in headers.
- `rollup.closed.v1` / `day.closed.v1`: one record = one closed hour (or correction) / one closed
  operator day, as JSON with a `format` member.

Batch boundaries carry no meaning: per-operator order is all that downstream relies on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import orjson

from cdr_mediation.domain.adjustment import (
    ADJUSTMENT_FORMAT,
    AdjustmentRefused,
    AdjustmentRequest,
    ChainRefusal,
    RefusalCode,
)
from cdr_mediation.domain.cdr import Cdr, DlrStatus, RecordType
from cdr_mediation.domain.day_close import DayClosed
from cdr_mediation.domain.rollup import ClockTick, RollupClosed

DLR_BATCH_FORMAT = "dlr-batch.v1"
CDR_BATCH_FORMAT = "cdr-batch.v1"
# One cdr-batch record stays well below Kafka's default 1 MB request/message limit: a bridge
# batch of 1,000 DLRs can become ~1 MB of entries with long ids.
MAX_CDR_RECORD_BYTES = 512 * 1024

_ENTRY_KEYS = frozenset(field.name for field in dataclasses.fields(Cdr))
# Members `Cdr.from_entry` lets default to null (the adjustment references).
_OPTIONAL_ENTRY_KEYS = frozenset(field.name for field in dataclasses.fields(Cdr)
                                 if field.default is not dataclasses.MISSING)
_REQUIRED_ENTRY_KEYS = _ENTRY_KEYS - _OPTIONAL_ENTRY_KEYS
_RECORD_TYPES = frozenset(kind.value for kind in RecordType)
_STATUSES = frozenset(status.value for status in DlrStatus)


class UndecodableRecord(ValueError):
    """A Kafka record that is not in the format its topic declares."""


def encode_dlr_batch(raw_dlrs: Sequence[bytes]) -> bytes:
    # The bridge forwards only UTF-8 payloads (domain/bridging.py); they travel as JSON strings.
    return orjson.dumps({"format": DLR_BATCH_FORMAT, "dlrs": [raw.decode("utf-8") for raw in raw_dlrs]})


def decode_dlr_batch(value: bytes) -> list[bytes]:
    try:
        document = orjson.loads(value)
        if document.get("format") != DLR_BATCH_FORMAT:
            raise UndecodableRecord(f"format {document.get('format')!r}, expected {DLR_BATCH_FORMAT!r}")
        return [text.encode("utf-8") for text in document["dlrs"]]
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError) as exc:
        raise UndecodableRecord(f"not a {DLR_BATCH_FORMAT} record: {exc}") from exc


# How a DLR batch record begins (orjson keeps "format" first): tells it from an adjustment
# without parsing a batch of up to a megabyte twice.
DLR_BATCH_PREFIX = b'{"format":"dlr-batch.v1"'


def encode_adjustment(request: AdjustmentRequest) -> bytes:
    return orjson.dumps({"format": ADJUSTMENT_FORMAT, "request": request.to_dict()})


def is_adjustment_record(value: bytes) -> bool:
    return not value.startswith(DLR_BATCH_PREFIX) and value.startswith(b'{"format":"adjustment.v1"')


def decode_adjustment(value: bytes) -> AdjustmentRequest:
    """An adjustment.v1 record → a validated request; AdjustmentRefused (invalid_adjustment)
    for anything else, so the caller dead-letters it with its bytes and the reason."""
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise AdjustmentRefused(RefusalCode.INVALID_REQUEST, f"not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != ADJUSTMENT_FORMAT or set(document) != {
            "format", "request"}:
        raise AdjustmentRefused(RefusalCode.INVALID_REQUEST, f"not an {ADJUSTMENT_FORMAT} record")
    return AdjustmentRequest.from_dict(document["request"])


def encode_cdr_batch(entries: Sequence[tuple[Cdr, str]]) -> bytes:
    return orjson.dumps({
        "format": CDR_BATCH_FORMAT,
        "entries": [{"entry": cdr.to_entry(), "record_hash": record_hash} for cdr, record_hash in entries],
    })


def encode_adjustment_entry(entry: dict, record_hash: str, supersedes: dict) -> bytes:
    """The cdr-batch record of one adjustment entry, with the version it supersedes."""
    return orjson.dumps({"format": CDR_BATCH_FORMAT,
                         "entries": [{"entry": entry, "record_hash": record_hash, "supersedes": supersedes}]})


def encode_cdr_records(entries: Sequence[tuple[dict, str]], max_bytes: int = MAX_CDR_RECORD_BYTES) -> list[bytes]:
    """(entry, record_hash) pairs — entries as `Cdr.to_entry()` gives them — as cdr-batch
    records in order, each at most `max_bytes` (unless one entry alone is larger). Batch
    boundaries carry no meaning downstream."""
    value = orjson.dumps({
        "format": CDR_BATCH_FORMAT,
        "entries": [{"entry": entry, "record_hash": record_hash} for entry, record_hash in entries],
    })
    if len(value) <= max_bytes or len(entries) < 2:
        return [value]
    half = len(entries) // 2
    return encode_cdr_records(entries[:half], max_bytes) + encode_cdr_records(entries[half:], max_bytes)


def decode_cdr_batch(value: bytes) -> list[tuple[Cdr, str]]:
    try:
        document = orjson.loads(value)
        if document.get("format") != CDR_BATCH_FORMAT:
            raise UndecodableRecord(f"format {document.get('format')!r}, expected {CDR_BATCH_FORMAT!r}")
        return [(Cdr.from_entry(item["entry"]), item["record_hash"]) for item in document["entries"]]
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, UndecodableRecord):
            raise
        raise UndecodableRecord(f"not a {CDR_BATCH_FORMAT} record: {exc}") from exc


def _check_entry(entry) -> None:
    if type(entry) is not dict:
        raise TypeError("entry is not a JSON object")
    keys = entry.keys()
    if keys != _ENTRY_KEYS and not _REQUIRED_ENTRY_KEYS <= keys <= _ENTRY_KEYS:
        raise TypeError(f"entry members differ from a CDR's: {sorted(keys ^ _ENTRY_KEYS)[:5]}")
    if entry["record_type"] not in _RECORD_TYPES:
        raise ValueError(f"{entry['record_type']!r} is not a valid RecordType")
    if entry["status"] not in _STATUSES:
        raise ValueError(f"{entry['status']!r} is not a valid DlrStatus")


def decode_cdr_entries(value: bytes) -> list[tuple]:
    """The (entry, record_hash) pairs of a cdr-batch record, entries as the JSON objects they are;
    an adjustment comes as (entry, record_hash, supersedes).

    Accepts and refuses exactly the records `decode_cdr_batch` does — same member names (the
    adjustment references may be absent), a known `record_type` and `status` — without building
    `Cdr` objects, which the store would only take apart again into columns.
    """
    try:
        document = orjson.loads(value)
        if document.get("format") != CDR_BATCH_FORMAT:
            raise UndecodableRecord(f"format {document.get('format')!r}, expected {CDR_BATCH_FORMAT!r}")
        pairs = []
        for item in document["entries"]:
            entry = item["entry"]
            _check_entry(entry)
            supersedes = item.get("supersedes")
            if supersedes is None:
                pairs.append((entry, item["record_hash"]))  # an adjustment without it: the rollup refuses
            else:
                _check_entry(supersedes)
                pairs.append((entry, item["record_hash"], supersedes))
        return pairs
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, UndecodableRecord):
            raise
        raise UndecodableRecord(f"not a {CDR_BATCH_FORMAT} record: {exc}") from exc


@dataclasses.dataclass(frozen=True)
class DeadLetterRecord:
    """One rejected input as it is written to the dead-letter topic."""

    key: str  # operator_id when known, else "unknown"
    original: bytes
    reason: str  # stable machine-readable code (metric label)
    detail: str  # human-readable explanation
    stage: str  # "bridge" or "ingest"
    source: str  # where the original came from (JetStream sequence, or Kafka topic/partition/offset/index)

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            ("dlq-reason", self.reason.encode()),
            ("dlq-detail", self.detail.encode("utf-8", "replace")[:2048]),
            ("dlq-stage", self.stage.encode()),
            ("dlq-source", self.source.encode()),
        ]

    @classmethod
    def from_kafka(cls, key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]]) -> "DeadLetterRecord":
        found = {name: raw.decode("utf-8", "replace") for name, raw in headers}
        return cls(key=(key or b"unknown").decode(), original=value, reason=found.get("dlq-reason", ""),
                   detail=found.get("dlq-detail", ""), stage=found.get("dlq-stage", ""),
                   source=found.get("dlq-source", ""))


# --- the other records of the CDR topic and the rollup topics -------------------------------------

CLOCK_TICK_FORMAT = "clock-tick.v1"
ROLLUP_CLOSED_FORMAT = "rollup-closed.v1"


def encode_clock_tick(tick: ClockTick) -> bytes:
    """A clock tick as a record of the CDR topic (keyed by its operator, like the CDRs it follows)."""
    return orjson.dumps({"format": CLOCK_TICK_FORMAT, **tick.to_dict()})


ADJUSTMENT_REFUSED_FORMAT = "adjustment-refused.v1"


def encode_chain_refusal(refusal: ChainRefusal) -> bytes:
    return orjson.dumps({"format": ADJUSTMENT_REFUSED_FORMAT, "refusal": refusal.to_dict()})


def decode_cdr_topic_record(value: bytes) -> list[tuple[dict, str]] | ClockTick | ChainRefusal:
    """A record of the CDR topic: a cdr-batch (its (entry, record_hash) pairs), a clock tick, or
    an adjustment request the chain refused."""
    if value.startswith(b'{"format":"adjustment-refused.v1"'):
        try:
            document = orjson.loads(value)
            if set(document) != {"format", "refusal"}:
                raise ValueError(f"members {sorted(document)}")
            return ChainRefusal.from_dict(document["refusal"])
        except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
            raise UndecodableRecord(f"not an {ADJUSTMENT_REFUSED_FORMAT} record: {exc}") from exc
    if value.startswith(b'{"format":"clock-tick.v1"'):
        try:
            document = orjson.loads(value)
            tick = ClockTick(operator_id=document["operator_id"], at=document["at"])
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise UndecodableRecord(f"not a {CLOCK_TICK_FORMAT} record: {exc}") from exc
        if type(tick.operator_id) is not str or type(tick.at) is not str:
            raise UndecodableRecord(f"not a {CLOCK_TICK_FORMAT} record: operator_id and at must be strings")
        return tick
    return decode_cdr_entries(value)


def encode_rollup_closed(closed: RollupClosed) -> bytes:
    return orjson.dumps({"format": ROLLUP_CLOSED_FORMAT, "closed": closed.to_dict()})


def _decode_closed(value: bytes, record_format: str, from_dict):
    """`from_dict` of the `closed` member of a `{"format": record_format, "closed": {...}}` record."""
    try:
        document = orjson.loads(value)
        if document.get("format") != record_format:
            raise UndecodableRecord(f"format {document.get('format')!r}, expected {record_format!r}")
        return from_dict(document["closed"])
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, UndecodableRecord):
            raise
        raise UndecodableRecord(f"not a {record_format} record: {exc}") from exc


def decode_rollup_closed(value: bytes) -> RollupClosed:
    return _decode_closed(value, ROLLUP_CLOSED_FORMAT, RollupClosed.from_dict)


DAY_CLOSED_FORMAT = "day-closed.v1"


def encode_day_closed(day: DayClosed) -> bytes:
    return orjson.dumps({"format": DAY_CLOSED_FORMAT, "closed": day.to_dict()})


def decode_day_closed(value: bytes) -> DayClosed:
    return _decode_closed(value, DAY_CLOSED_FORMAT, DayClosed.from_dict)
