"""The audit log's hash chain (issue 7; the contract is docs/audit.md).

One chain for the whole system: who did what, when, on whose request, to which records.

    entry       = {audit_seq, at, actor, actor_role, action, request_id, refs, detail, prev_hash}
    prev_hash   = entry_hash of the entry with audit_seq - 1; 64 ASCII zeros for audit_seq 1
    entry_hash  = lowercase hex SHA-256 of the RFC 8785 (JCS) bytes of entry

`entry_hash` is not a member of the entry it names. `at` is a string the *database* produced
(`YYYY-MM-DDTHH:MM:SS.ffffffZ`, UTC, microseconds) and it is hashed and stored as that very
string: nothing is re-rendered between the clock and the hash, so re-verification never depends
on a time zone, a precision or a formatting library. `refs` and `detail` are JSON objects limited
to what JCS serialises the same everywhere (integers within ±(2**53 - 1), ASCII keys, no floats)
and what PostgreSQL's jsonb keeps exactly (no U+0000), so a stored entry reads back as the bytes
that were hashed.

This module is pure: the store (infra/postgres/audit_store.py) reads the database clock and the
head under a lock and calls `append`.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import itertools
import re
from typing import Any, Iterable, Mapping

from cdr_mediation.codecs.canonical_json import canonical_bytes, is_fast_path_value
from cdr_mediation.domain.access import Role

GENESIS_PREV_HASH = "0" * 64

ENTRY_KEYS = ("audit_seq", "at", "actor", "actor_role", "action", "request_id", "refs", "detail", "prev_hash")

# The actions written today; the pattern admits new ones (`<subject>.<verb>`) without a change here.
EXPORT_TRANSITION = "export.transition"
CHAIN_VERIFY = "chain.verify"
AUDIT_VERIFY = "audit.verify"
ADJUSTMENT_CREATE = "adjustment.create"

# Who acts: a person through the portal or a command (a portal role) or the system itself.
SYSTEM_ROLE = "system"
ACTOR_ROLES = frozenset({SYSTEM_ROLE} | {role.value for role in Role})

AT_PATTERN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
_ACTION = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_NAME = 200


class InvalidAuditEntry(ValueError):
    """An entry the log must not hold (the message says which member and why)."""


def entry_hash(entry: Mapping[str, Any]) -> str:
    """Lowercase hex SHA-256 of the RFC 8785 serialisation of the entry (without entry_hash)."""
    return hashlib.sha256(canonical_bytes(dict(entry))).hexdigest()


def _printable_name(member: str, value: Any) -> None:
    if type(value) is not str or not value or len(value) > _MAX_NAME or not value.isprintable() \
            or value != value.strip():
        raise InvalidAuditEntry(f"{member} must be a non-empty printable string of at most {_MAX_NAME} "
                                f"characters without surrounding blanks, not {value!r}")


def _has_nul(value: Any) -> bool:
    if type(value) is str:
        return "\x00" in value
    if type(value) is dict:
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if type(value) is list:
        return any(_has_nul(item) for item in value)
    return False


def _json_object(member: str, value: Any) -> None:
    # Floats and non-ASCII keys are refused rather than hashed: their JCS form is easy to get wrong
    # in another language and jsonb may not give the same number back. U+0000 jsonb cannot store.
    if type(value) is not dict or not is_fast_path_value(value) or _has_nul(value):
        raise InvalidAuditEntry(f"{member} must be a JSON object of strings (no U+0000), integers within "
                                f"±(2**53 - 1), booleans, null, lists and objects with ASCII keys")


@dataclasses.dataclass(frozen=True, slots=True)
class AuditDraft:
    """What a writer says about its act; `append` gives it its place and time in the log."""

    actor: str
    actor_role: str
    action: str
    request_id: str
    refs: Mapping[str, Any]
    detail: Mapping[str, Any]

    def __post_init__(self) -> None:
        _printable_name("actor", self.actor)
        if self.actor_role not in ACTOR_ROLES:
            raise InvalidAuditEntry(f"actor_role must be one of {sorted(ACTOR_ROLES)}, not {self.actor_role!r}")
        if type(self.action) is not str or _ACTION.fullmatch(self.action) is None:
            raise InvalidAuditEntry(f"action must look like 'subject.verb', not {self.action!r}")
        _printable_name("request_id", self.request_id)
        _json_object("refs", self.refs)
        _json_object("detail", self.detail)


@dataclasses.dataclass(frozen=True, slots=True)
class AuditHead:
    """Where the log ends: the last audit_seq and its entry_hash (0 and 64 zeros when empty)."""

    audit_seq: int
    entry_hash: str

    @classmethod
    def genesis(cls) -> "AuditHead":
        return cls(0, GENESIS_PREV_HASH)


@dataclasses.dataclass(frozen=True, slots=True)
class AuditEntry:
    """An entry of the log and its entry_hash (which `to_entry` leaves out, as it is not hashed)."""

    audit_seq: int
    at: str
    actor: str
    actor_role: str
    action: str
    request_id: str
    refs: Mapping[str, Any]
    detail: Mapping[str, Any]
    prev_hash: str
    entry_hash: str

    def to_entry(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in ENTRY_KEYS}

    def to_row(self) -> dict[str, Any]:
        return {**self.to_entry(), "entry_hash": self.entry_hash}

    @property
    def head(self) -> AuditHead:
        return AuditHead(self.audit_seq, self.entry_hash)


def append(head: AuditHead, draft: AuditDraft, at: str) -> AuditEntry:
    """The entry that follows `head`, made at `at` (the database's clock, as a string)."""
    if type(at) is not str or AT_PATTERN.fullmatch(at) is None:
        raise InvalidAuditEntry(f"at must be YYYY-MM-DDTHH:MM:SS.ffffffZ, not {at!r}")
    entry = {
        "audit_seq": head.audit_seq + 1, "at": at, "actor": draft.actor, "actor_role": draft.actor_role,
        "action": draft.action, "request_id": draft.request_id, "refs": dict(draft.refs),
        "detail": dict(draft.detail), "prev_hash": head.entry_hash,
    }
    return AuditEntry(**entry, entry_hash=entry_hash(entry))


class AuditBreakKind(str, enum.Enum):
    MALFORMED_ENTRY = "malformed_entry"  # a member missing, extra or ill-typed
    DUPLICATE_SEQ = "duplicate_seq"  # same audit_seq as the entry before
    OUT_OF_ORDER = "out_of_order"  # an entry ahead of its place: the expected one comes right after it
    GAP = "gap"  # audit_seq higher than expected and the expected entry does not follow: it is missing
    PREV_HASH_MISMATCH = "prev_hash_mismatch"  # does not link to the entry before
    HASH_MISMATCH = "hash_mismatch"  # stored entry_hash is not the hash of the stored entry (changed)
    HEAD_MISMATCH = "head_mismatch"  # the entries disagree with a head recorded elsewhere
    TRUNCATED = "truncated"  # the entries end before a head recorded elsewhere


@dataclasses.dataclass(frozen=True, slots=True)
class AuditBreak:
    """The first place where the entries stop being the log: `seq` is the audit_seq the verifier
    expected there, `index` the 0-based position of the offending entry in the input.
    `expected` / `found` are hashes for the hash kinds, decimal audit_seq values for the sequence
    kinds and TRUNCATED, a description for MALFORMED_ENTRY. `index` is None for TRUNCATED (found
    after the last entry)."""

    kind: AuditBreakKind
    seq: int
    expected: str
    found: str
    index: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "seq": self.seq, "expected": self.expected, "found": self.found,
                "index": self.index}


@dataclasses.dataclass(frozen=True, slots=True)
class AuditVerification:
    verified: int  # entries checked and found valid before the first break
    head: AuditHead  # head after the last valid entry
    first_break: AuditBreak | None

    @property
    def ok(self) -> bool:
        return self.first_break is None

    def to_dict(self) -> dict[str, Any]:
        report: dict[str, Any] = {"ok": self.ok, "verified": self.verified,
                                  "head": {"audit_seq": self.head.audit_seq, "entry_hash": self.head.entry_hash}}
        if self.first_break is not None:
            report["first_break"] = self.first_break.to_dict()
        return report


_ROW_KEYS = frozenset(ENTRY_KEYS) | {"entry_hash"}


def _malformed(row: Any) -> str | None:
    if not isinstance(row, Mapping):
        return "entry is not a mapping"
    if set(row) != _ROW_KEYS:
        return f"members are {sorted(row)}, not {sorted(_ROW_KEYS)}"
    seq = row["audit_seq"]
    if type(seq) is not int or seq < 1:
        return "audit_seq is not a positive integer"
    for key in ("prev_hash", "entry_hash"):
        if type(row[key]) is not str or _HEX64.fullmatch(row[key]) is None:
            return f"{key} is not 64 lowercase hex digits"
    if type(row["at"]) is not str or AT_PATTERN.fullmatch(row["at"]) is None:
        return "at is not YYYY-MM-DDTHH:MM:SS.ffffffZ"
    for key in ("actor", "actor_role", "action", "request_id"):
        if type(row[key]) is not str:
            return f"{key} is not a string"
    for key in ("refs", "detail"):
        if not isinstance(row[key], Mapping):
            return f"{key} is not a JSON object"
    return None


def check_audit_chain(rows: Iterable[Mapping[str, Any]], *, start: AuditHead | None = None,
                      expected_head: AuditHead | None = None) -> AuditVerification:
    """Recompute the log from stored entries (each with its `entry_hash`), in the order given, up
    to the first break. `start` is the head they continue (default: the empty log);
    `expected_head` is a head recorded elsewhere (a previous verification, a report): the entry
    with its audit_seq must have its hash, and the entries must reach it.

    Per entry, in this order: well-formed, audit_seq (duplicate / out of order / gap), prev_hash
    links to the previous entry's hash, entry_hash equals the recomputed hash. What each tampering
    looks like: a changed member → hash_mismatch at that entry; a changed entry whose hash was
    recomputed → prev_hash_mismatch at the next; a removed entry → gap; an entry placed before
    its predecessor (two swapped, one moved up) → out_of_order at it; a removed tail →
    truncated, a rewritten tail → head_mismatch (both only against `expected_head`).
    Streaming with one entry of look-ahead: entries are not held in memory.
    """
    head = start if start is not None else AuditHead.genesis()
    verified = 0
    rows = iter(rows)
    ahead: list[Any] = []  # the one entry read ahead, if any

    def broken(kind: AuditBreakKind, expected: Any, found: Any, index: int | None) -> AuditVerification:
        return AuditVerification(verified, head, AuditBreak(kind, head.audit_seq + 1, str(expected), str(found), index))

    def follows(expected_seq: int) -> bool:
        ahead.extend(itertools.islice(rows, 1))
        return bool(ahead) and isinstance(ahead[0], Mapping) and ahead[0].get("audit_seq") == expected_seq

    index = -1
    while True:
        row = ahead.pop() if ahead else next(rows, _END)
        if row is _END:
            break
        index += 1
        problem = _malformed(row)
        if problem is not None:
            return broken(AuditBreakKind.MALFORMED_ENTRY, "well-formed entry", problem, index)
        seq, expected_seq = row["audit_seq"], head.audit_seq + 1
        if seq != expected_seq:
            if seq == head.audit_seq:
                kind = AuditBreakKind.DUPLICATE_SEQ
            elif seq < head.audit_seq or follows(expected_seq):
                kind = AuditBreakKind.OUT_OF_ORDER
            else:
                kind = AuditBreakKind.GAP
            return broken(kind, expected_seq, seq, index)
        if row["prev_hash"] != head.entry_hash:
            return broken(AuditBreakKind.PREV_HASH_MISMATCH, head.entry_hash, row["prev_hash"], index)
        try:
            recomputed = entry_hash({key: row[key] for key in ENTRY_KEYS})
        except (ValueError, TypeError, RecursionError) as exc:
            return broken(AuditBreakKind.MALFORMED_ENTRY, "JSON-representable entry", exc, index)
        if row["entry_hash"] != recomputed:
            return broken(AuditBreakKind.HASH_MISMATCH, recomputed, row["entry_hash"], index)
        if expected_head is not None and seq == expected_head.audit_seq and recomputed != expected_head.entry_hash:
            return broken(AuditBreakKind.HEAD_MISMATCH, expected_head.entry_hash, recomputed, index)
        head = AuditHead(seq, recomputed)
        verified += 1
    if expected_head is not None and head.audit_seq < expected_head.audit_seq:
        return broken(AuditBreakKind.TRUNCATED, expected_head.audit_seq, head.audit_seq, None)
    return AuditVerification(verified, head, None)


_END = object()


def verify_audit_chain(rows: Iterable[Mapping[str, Any]], *, start: AuditHead | None = None,
                       expected_head: AuditHead | None = None) -> AuditBreak | None:
    """The first break of the log (`check_audit_chain`), or None if every entry holds."""
    return check_audit_chain(rows, start=start, expected_head=expected_head).first_break
