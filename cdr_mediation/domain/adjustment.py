"""Adjustments: VOID and CORRECT as new chain entries that reference an original CDR.

A stored CDR is never edited (DESIGN.md §4.3). An admin who finds one wrong asks for an
adjustment; it becomes a new entry at the head of the operator's chain that names the original
by ``ref_cdr_id`` and carries the ticket and the actor (docs/adjustments.md):

* ``VOID``: the record did not happen as billed. The entry repeats the version it cancels
  (the original, or its latest correction) with ``billable`` false and zero amounts: TAP
  amounts are never negative, and a naive sum of a file's charges must not count a void.
* ``CORRECT``: the full corrected record. Identity, event time and currency are fixed
  (`FIXED_FIELDS`): a correction changes what was billed for a message, never which message or
  which hour/day it belongs to, so every version of a record stays in one rollup hour.

Rules, checked twice: by the portal against PostgreSQL when the request is made (a clear answer
at once) and by the ingest agent against its own table when the request reaches the chain
(`check_against_chain`), which is what decides — deterministically, in log order:

* only an original CDR (``record_type == CDR``) is adjusted, by its ``cdr_id``;
* a voided record cannot be voided again, nor corrected;
* a correction may follow a correction (the latest version is what is superseded);
* the request names the version it supersedes by its ``record_hash`` (optimistic concurrency:
  two admins correcting the same record cannot both win);
* ticket and actor are required; a CORRECT carries every correctable field and changes one.

This module is pure: no clock, no I/O.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import re
import uuid
from typing import Any, Mapping

from cdr_mediation.codecs.canonical_json import canonical_bytes
from cdr_mediation.domain.cdr import Cdr, DlrStatus, RecordType, format_utc, parse_utc
from cdr_mediation.domain.chain import UNLINKED_PREV_HASH, UNLINKED_SEQ, record_hash
from cdr_mediation.domain.dlr import PATTERNS

ADJUSTMENT_FORMAT = "adjustment.v1"

# The record members a correction may change, and those it may not.
CORRECTABLE_FIELDS: tuple[str, ...] = (
    "tenant_id", "sender_id", "msisdn", "status", "submitted_at", "segments", "billable",
    "unit_price_minor", "amount_minor", "tax_minor", "pricing_version", "error_code", "smsc_id",
)
FIXED_FIELDS: tuple[str, ...] = ("operator_id", "dlr_id", "message_id", "done_at", "currency")

# cdr_id of an adjustment entry: UUIDv5 of its adjustment_id under this namespace, itself
# UUIDv5(NAMESPACE_URL, "urn:cdr-mediation:adjustment-id:v1") frozen as a literal.
ADJUSTMENT_ID_NAMESPACE = uuid.UUID("04ba6f7f-9bb0-5199-ad60-0ddd62e5d2d9")

_ENTRY_KEYS = frozenset(field.name for field in dataclasses.fields(Cdr))
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_PRINTABLE = re.compile(r"[ -~]+")
_FIELD_RE = {name: re.compile(PATTERNS[name]) for name in ("tenant_id", "sender_id", "msisdn", "smsc_id",
                                                            "error_code", "operator_id")}
_PRICING_VERSION = re.compile(r"[A-Za-z0-9._:/-]{1,128}")  # a rate_id, as domain/pricing.py reads it
MAX_TICKET_REF = 64
MAX_ACTOR = 128
MAX_SEGMENTS = 255


class AdjustmentKind(str, enum.Enum):
    VOID = "VOID"
    CORRECT = "CORRECT"


class RefusalCode(str, enum.Enum):
    """Why an adjustment is refused. Stable: API error codes, dead-letter reasons, metric labels."""

    INVALID_REQUEST = "invalid_adjustment"
    UNKNOWN_CDR = "unknown_cdr"
    NOT_AN_ORIGINAL = "not_an_original"
    ALREADY_VOIDED = "already_voided"
    VOIDED_RECORD = "voided_record"
    STALE_VERSION = "stale_version"
    NO_CHANGE = "no_change"
    ADJUSTMENT_ID_REUSED = "adjustment_id_reused"
    ADJUSTMENT_PENDING = "adjustment_pending"  # the portal's: an earlier one is not in the chain yet


@dataclasses.dataclass(frozen=True, slots=True)
class ChainRefusal:
    """An accepted request the chain refused (e.g. `stale_version` after a race between two
    portal replicas): what the store keeps so the request's status says so, and so it no longer
    counts as pending. Derived from the log alone, so a replay gives the same refusal."""

    adjustment_id: str
    operator_id: str
    ref_cdr_id: str
    code: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, value: Any) -> "ChainRefusal":
        names = [field.name for field in dataclasses.fields(cls)]
        if not isinstance(value, dict) or sorted(value) != sorted(names) or not all(
                isinstance(value[name], str) for name in names):
            raise ValueError(f"a chain refusal has exactly the string members {', '.join(names)}")
        return cls(**value)


class AdjustmentRefused(ValueError):
    def __init__(self, code: RefusalCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _refuse(message: str, code: RefusalCode = RefusalCode.INVALID_REQUEST) -> AdjustmentRefused:
    return AdjustmentRefused(code, message)


def is_uuid(text: str) -> bool:
    """A lowercase hyphenated UUID, as every id of the chain is written."""
    return type(text) is str and _UUID.fullmatch(text) is not None


def adjustment_cdr_id(adjustment_id: str) -> str:
    """The ``cdr_id`` of the chain entry an adjustment becomes: same request, same id, forever."""
    return str(uuid.uuid5(ADJUSTMENT_ID_NAMESPACE, adjustment_id))


@dataclasses.dataclass(frozen=True)
class AdjustmentRequest:
    """What travels from the portal (through the outbox and the adjustment topic) to the ingest
    agent. `current` is the version superseded — the original entry or its latest correction —
    exactly as stored, and `current_hash` its record_hash."""

    adjustment_id: str
    operator_id: str
    kind: AdjustmentKind
    ref_cdr_id: str
    ticket_ref: str
    actor: str
    current: Mapping[str, Any]
    current_hash: str
    corrected: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "adjustment_id": self.adjustment_id,
            "operator_id": self.operator_id,
            "kind": self.kind.value,
            "ref_cdr_id": self.ref_cdr_id,
            "ticket_ref": self.ticket_ref,
            "actor": self.actor,
            "current": dict(self.current),
            "current_hash": self.current_hash,
            "corrected": None if self.corrected is None else dict(self.corrected),
        }

    @classmethod
    def from_dict(cls, value: Any) -> "AdjustmentRequest":
        """Strict: exactly the members `to_dict` writes; the request is then `validate`d."""
        if not isinstance(value, Mapping):
            raise _refuse("an adjustment request is a JSON object")
        expected = {"adjustment_id", "operator_id", "kind", "ref_cdr_id", "ticket_ref", "actor", "current",
                    "current_hash", "corrected"}
        if set(value) != expected:
            raise _refuse(f"adjustment request members differ: {sorted(set(value) ^ expected)}")
        try:
            kind = AdjustmentKind(value["kind"])
        except ValueError:
            raise _refuse(f"kind must be VOID or CORRECT, not {value['kind']!r}") from None
        request = cls(value["adjustment_id"], value["operator_id"], kind, value["ref_cdr_id"], value["ticket_ref"],
                      value["actor"], value["current"], value["current_hash"], value["corrected"])
        request.validate()
        return request

    def fingerprint(self) -> str:
        """SHA-256 of the request's RFC 8785 bytes: tells a redelivery from a reused id."""
        return hashlib.sha256(canonical_bytes(self.to_dict())).hexdigest()

    @property
    def cdr_id(self) -> str:
        return adjustment_cdr_id(self.adjustment_id)

    def validate(self) -> None:
        """The rules a request must meet on its own (without the chain): AdjustmentRefused."""
        for name in ("adjustment_id", "ref_cdr_id"):
            if type(getattr(self, name)) is not str or _UUID.fullmatch(getattr(self, name)) is None:
                raise _refuse(f"{name} must be a lowercase hyphenated UUID")
        if type(self.operator_id) is not str or _FIELD_RE["operator_id"].fullmatch(self.operator_id) is None:
            raise _refuse("operator_id is not an operator id")
        _require_text("ticket_ref", self.ticket_ref, MAX_TICKET_REF)
        _require_text("actor", self.actor, MAX_ACTOR)
        current = self.current
        if not isinstance(current, Mapping) or set(current) != _ENTRY_KEYS:
            raise _refuse("current must be a complete chain entry")
        if type(self.current_hash) is not str or _HEX64.fullmatch(self.current_hash) is None:
            raise _refuse("current_hash must be 64 lowercase hex digits")
        try:
            recomputed = record_hash(current)
        except (TypeError, ValueError) as exc:
            raise _refuse(f"current is not a JSON entry: {exc}") from None
        if recomputed != self.current_hash:
            raise _refuse("current_hash is not the record_hash of current")
        if current["operator_id"] != self.operator_id:
            raise _refuse("current belongs to another operator")
        version_of(current, self.ref_cdr_id)
        if self.kind is AdjustmentKind.VOID:
            if self.corrected is not None:
                raise _refuse("a VOID carries no corrected record")
            return
        if not isinstance(self.corrected, Mapping):
            raise _refuse("a CORRECT carries the full corrected record (corrected)")
        check_corrected(self.corrected)
        if all(self.corrected[name] == current[name] for name in CORRECTABLE_FIELDS):
            raise _refuse("the corrected record is the same as the current one", RefusalCode.NO_CHANGE)


def _require_text(name: str, value: Any, limit: int) -> None:
    if type(value) is not str or not value.strip() or len(value) > limit or _PRINTABLE.fullmatch(value) is None:
        raise _refuse(f"{name} is required: 1 to {limit} printable ASCII characters")


def version_of(entry: Mapping[str, Any], ref_cdr_id: str) -> None:
    """AdjustmentRefused unless `entry` is a live version of the record `ref_cdr_id`: the
    original CDR itself or a CORRECT of it. A VOID is no live version: the record is voided."""
    record_type = entry.get("record_type")
    if record_type == RecordType.CDR.value:
        if entry.get("cdr_id") != ref_cdr_id:
            raise _refuse("current is not the record named by ref_cdr_id")
    elif record_type == RecordType.CORRECT.value:
        if entry.get("ref_cdr_id") != ref_cdr_id:
            raise _refuse("current is a correction of another record")
    elif record_type == RecordType.VOID.value:
        raise _refuse("the record is voided", RefusalCode.VOIDED_RECORD)
    else:
        raise _refuse(f"current has record_type {record_type!r}")


def check_corrected(corrected: Mapping[str, Any]) -> None:
    """The corrected record: every correctable field, each of the type and form a CDR has."""
    if set(corrected) != set(CORRECTABLE_FIELDS):
        missing = sorted(set(CORRECTABLE_FIELDS) - set(corrected))
        extra = sorted(set(corrected) - set(CORRECTABLE_FIELDS))
        detail = "; ".join(part for part in (f"missing {missing}" if missing else "",
                                             f"not correctable {extra}" if extra else "") if part)
        raise _refuse(f"corrected must hold exactly the correctable fields ({detail})")
    for name in ("tenant_id", "sender_id", "msisdn", "smsc_id"):
        value = corrected[name]
        if type(value) is not str or _FIELD_RE[name].fullmatch(value) is None:
            raise _refuse(f"corrected.{name} is not a valid {name}")
    if corrected["error_code"] is not None and (
            type(corrected["error_code"]) is not str or _FIELD_RE["error_code"].fullmatch(corrected["error_code"]) is None):
        raise _refuse("corrected.error_code is not a valid error code (or null)")
    if corrected["status"] not in {status.value for status in DlrStatus}:
        raise _refuse(f"corrected.status must be one of {[s.value for s in DlrStatus]}")
    submitted_at = corrected["submitted_at"]
    try:
        canonical = type(submitted_at) is str and format_utc(parse_utc(submitted_at)) == submitted_at
    except ValueError:
        canonical = False
    if not canonical:
        raise _refuse("corrected.submitted_at must be a UTC timestamp as entries write it (2026-11-22T10:15:00.123Z)")
    segments = corrected["segments"]
    if type(segments) is not int or not 1 <= segments <= MAX_SEGMENTS:
        raise _refuse(f"corrected.segments must be an integer from 1 to {MAX_SEGMENTS}")
    if type(corrected["billable"]) is not bool:
        raise _refuse("corrected.billable must be true or false")
    for name in ("unit_price_minor", "amount_minor", "tax_minor"):
        value = corrected[name]
        if type(value) is not int or value < 0 or value >= 1 << 63:
            raise _refuse(f"corrected.{name} must be a non-negative integer (minor units)")
    if not corrected["billable"] and (corrected["amount_minor"] or corrected["tax_minor"]):
        raise _refuse("a record that is not billable has zero amounts")
    if type(corrected["pricing_version"]) is not str or _PRICING_VERSION.fullmatch(corrected["pricing_version"]) is None:
        raise _refuse("corrected.pricing_version is not a rate id")


class TargetState(str, enum.Enum):
    CORRECTED = "CORRECTED"
    VOIDED = "VOIDED"


@dataclasses.dataclass(frozen=True, slots=True)
class AdjustedRecord:
    """What the ingest table remembers about an original that has been adjusted: its state and
    the version now in force (chain_seq and record_hash). `source_offset` plays the part it plays
    in `DedupEntry`: the entry counts only once a state records its batch."""

    source_offset: int
    state: TargetState
    effective_seq: int
    effective_hash: str

    def to_dict(self) -> dict[str, Any]:
        return {"source_offset": self.source_offset, "state": self.state.value,
                "effective_seq": self.effective_seq, "effective_hash": self.effective_hash}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> "AdjustedRecord":
        return cls(value["source_offset"], TargetState(value["state"]), value["effective_seq"],
                   value["effective_hash"])


@dataclasses.dataclass(frozen=True, slots=True)
class OriginalRecord:
    """The chain's own record of an original CDR (from the ingest table's dedup entry)."""

    cdr_id: str
    chain_seq: int
    record_hash: str | None  # None for dedup entries written before hashes were kept


def check_against_chain(request: AdjustmentRequest, original: OriginalRecord | None,
                        adjusted: AdjustedRecord | None) -> None:
    """The rules that need the chain: AdjustmentRefused unless `request` may be appended now.

    `original` is what the chain recorded for ``current.dlr_id`` (None: no such CDR), `adjusted`
    what it recorded about earlier adjustments of the record (None: none)."""
    if original is None or original.cdr_id != request.ref_cdr_id:
        raise _refuse(f"no original CDR {request.ref_cdr_id} in the chain of {request.operator_id}",
                      RefusalCode.UNKNOWN_CDR)
    if adjusted is not None and adjusted.state is TargetState.VOIDED:
        if request.kind is AdjustmentKind.VOID:
            raise _refuse(f"CDR {request.ref_cdr_id} is already voided", RefusalCode.ALREADY_VOIDED)
        raise _refuse(f"CDR {request.ref_cdr_id} is voided and cannot be corrected", RefusalCode.VOIDED_RECORD)
    if adjusted is not None:
        in_force = adjusted.effective_hash
    elif original.record_hash is not None:
        in_force = original.record_hash
    else:
        raise _refuse(f"the chain kept no hash of CDR {request.ref_cdr_id}: it cannot be adjusted safely",
                      RefusalCode.STALE_VERSION)
    if request.current_hash != in_force:
        raise _refuse(f"CDR {request.ref_cdr_id} changed since the request was made: adjust its current version",
                      RefusalCode.STALE_VERSION)


def adjustment_entry(request: AdjustmentRequest) -> Cdr:
    """The unlinked chain entry of a valid request (`chain.link` places it)."""
    values = {name: request.current[name] for name in _ENTRY_KEYS}
    if request.kind is AdjustmentKind.CORRECT:
        assert request.corrected is not None
        values.update({name: request.corrected[name] for name in CORRECTABLE_FIELDS})
        record_type = RecordType.CORRECT
    else:
        values.update(billable=False, amount_minor=0, tax_minor=0)
        record_type = RecordType.VOID
    values.update(record_type=record_type.value, cdr_id=request.cdr_id, ref_cdr_id=request.ref_cdr_id,
                  ticket_ref=request.ticket_ref, actor=request.actor, chain_seq=UNLINKED_SEQ,
                  prev_hash=UNLINKED_PREV_HASH)
    return Cdr.from_entry(values)


def adjusted_after(request: AdjustmentRequest, source_offset: int, chain_seq: int, entry_hash: str) -> AdjustedRecord:
    """The ingest table's record of the original once `request` is in the chain."""
    state = TargetState.VOIDED if request.kind is AdjustmentKind.VOID else TargetState.CORRECTED
    return AdjustedRecord(source_offset, state, chain_seq, entry_hash)


# --- the request an admin makes (POST /v1/adjustments) -------------------------------------------

# adjustment_id of a request: UUIDv5 of its Idempotency-Key under this namespace (itself
# UUIDv5(NAMESPACE_URL, "urn:cdr-mediation:adjustment-request:v1")), so one key names one
# adjustment, whoever retries it.
ADJUSTMENT_REQUEST_NAMESPACE = uuid.UUID("68cb40ce-cc17-5cce-a714-46656d1118a9")
_IDEMPOTENCY_KEY = re.compile(r"[!-~]{1,128}")
_BODY_MEMBERS = {"kind", "ref_cdr_id", "ticket_ref", "corrected"}


@dataclasses.dataclass(frozen=True)
class AdjustmentBody:
    """The body an admin posts: what to do, to which record, under which ticket."""

    kind: AdjustmentKind
    ref_cdr_id: str
    ticket_ref: str
    corrected: Mapping[str, Any] | None


def parse_idempotency_key(value: str | None) -> str:
    if value is None or _IDEMPOTENCY_KEY.fullmatch(value) is None:
        raise _refuse("the Idempotency-Key header is required: 1 to 128 printable ASCII characters, no spaces")
    return value


def adjustment_id_for(idempotency_key: str) -> str:
    return str(uuid.uuid5(ADJUSTMENT_REQUEST_NAMESPACE, idempotency_key))


def parse_body(document: Any) -> AdjustmentBody:
    """The posted JSON body → `AdjustmentBody`; AdjustmentRefused (invalid_adjustment) naming
    the first problem. The corrected record is checked in full (`check_corrected`)."""
    if not isinstance(document, dict):
        raise _refuse("the body must be a JSON object")
    unknown = sorted(set(document) - _BODY_MEMBERS)
    if unknown:
        raise _refuse(f"unknown members {unknown}; allowed: {sorted(_BODY_MEMBERS)}")
    try:
        kind = AdjustmentKind(document.get("kind"))
    except ValueError:
        raise _refuse("kind must be VOID or CORRECT") from None
    ref_cdr_id = document.get("ref_cdr_id")
    if type(ref_cdr_id) is not str or _UUID.fullmatch(ref_cdr_id) is None:
        raise _refuse("ref_cdr_id must be a lowercase hyphenated UUID (the cdr_id of the original CDR)")
    ticket_ref = document.get("ticket_ref")
    _require_text("ticket_ref", ticket_ref, MAX_TICKET_REF)
    corrected = document.get("corrected")
    if kind is AdjustmentKind.VOID and corrected is not None:
        raise _refuse("a VOID carries no corrected record")
    if kind is AdjustmentKind.CORRECT:
        if not isinstance(corrected, dict):
            raise _refuse("a CORRECT carries the full corrected record in corrected")
        check_corrected(corrected)
    return AdjustmentBody(kind, ref_cdr_id, ticket_ref, corrected)


def request_for(body: AdjustmentBody, *, adjustment_id: str, actor: str, current: Mapping[str, Any],
                current_hash: str) -> AdjustmentRequest:
    """The request that travels to the chain, validated (AdjustmentRefused)."""
    request = AdjustmentRequest(adjustment_id, current["operator_id"], body.kind, body.ref_cdr_id, body.ticket_ref,
                                actor, dict(current), current_hash,
                                None if body.corrected is None else dict(body.corrected))
    request.validate()
    return request
