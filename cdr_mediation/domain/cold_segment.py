"""Cold segments: which chain entries leave PostgreSQL together, and how a segment proves itself.

A **segment** is a contiguous `chain_seq` range ``[first_seq, last_seq]`` of one operator's
chain. Segments are cut in chain order, never by calendar month of `done_at`: `done_at` is event
time and is not monotonic in `chain_seq` (late receipts, VOIDs of old CDRs), so a month of events
is not a chain range, and only a chain range can be verified link by link from the entry before
it (`prev_hash`) to its last entry (the segment's head hash). The next segment of an operator
always starts right after the previous one (or at 1), so the cold segments and the hot rows are
one unbroken chain.

Which range (`plan_segment`): from the first entry not yet cold up to the entry before the first
one whose `done_at` is inside the hot window (`retention.hot_window_start`), at most `max_rows`
entries, and never the operator's newest entry (PostgreSQL always holds each chain's head, so
"the current head" never depends on the archive). An entry with a recent `done_at` therefore
holds back everything after it until it is old enough itself: rows stay hot longer, never shorter.

A segment file is gzip of JSON lines, one per entry in chain order: the RFC 8785 serialisation of
the entry exactly as hashed, plus its ``record_hash`` (`segment_line`) — the row shape the chain
verifier reads. Its manifest (RFC 8785 JSON, `SegmentManifest`) states the range, the hash before
it and its head, the `done_at` range, and the digests of the file and its content. Same rows →
same lines → same manifest (docs/archive.md is the contract).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from cdr_mediation.codecs.canonical_json import canonical_bytes
from cdr_mediation.domain.cdr import GENESIS_PREV_HASH
from cdr_mediation.domain.chain import BreakKind, ChainBreak, ChainHead, ChainVerification, verify_chain
from cdr_mediation.domain.strict_json import StrictJsonError, loads_strict

MANIFEST_FORMAT = "cdr-mediation.cold-segment.v1"
KEY_PREFIX = "cold/cdr"
_OPERATOR = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")


class ManifestInvalid(ValueError):
    """A manifest that is not a valid cold-segment manifest (v1)."""


@dataclasses.dataclass(frozen=True, slots=True)
class SegmentRange:
    operator_id: str
    first_seq: int
    last_seq: int

    def __post_init__(self) -> None:
        if not _OPERATOR.fullmatch(self.operator_id):
            raise ValueError(f"{self.operator_id!r} is not an operator id")
        if not 1 <= self.first_seq <= self.last_seq:
            raise ValueError(f"invalid segment range {self.first_seq}..{self.last_seq}")

    @property
    def record_count(self) -> int:
        return self.last_seq - self.first_seq + 1

    @property
    def stem(self) -> str:
        # Zero-padded so that a listing of an operator's prefix is in chain order.
        return f"{KEY_PREFIX}/{self.operator_id}/{self.first_seq:012d}-{self.last_seq:012d}"

    @property
    def segment_key(self) -> str:
        return f"{self.stem}.jsonl.gz"

    @property
    def manifest_key(self) -> str:
        return f"{self.stem}.manifest.json"

    def to_dict(self) -> dict[str, Any]:
        return {"operator_id": self.operator_id, "first_seq": self.first_seq, "last_seq": self.last_seq,
                "record_count": self.record_count}


def plan_segment(operator_id: str, *, next_seq: int, head_seq: int, first_recent_seq: int | None,
                 max_rows: int) -> SegmentRange | None:
    """The next segment to archive, or None if nothing is eligible yet.

    `next_seq`: the first chain_seq not yet cold (1, or the last segment's `last_seq` + 1).
    `head_seq`: the operator's newest stored chain_seq (it stays hot).
    `first_recent_seq`: the lowest chain_seq >= `next_seq` whose done_at is inside the hot
    window, or None if there is none among the `max_rows` entries from `next_seq`."""
    if next_seq < 1 or max_rows < 1:
        raise ValueError("next_seq and max_rows must be positive")
    if first_recent_seq is not None and first_recent_seq < next_seq:
        raise ValueError(f"first_recent_seq {first_recent_seq} is before next_seq {next_seq}")
    last = min(head_seq - 1, next_seq + max_rows - 1)
    if first_recent_seq is not None:
        last = min(last, first_recent_seq - 1)
    return SegmentRange(operator_id, next_seq, last) if last >= next_seq else None


def segment_line(row: Mapping[str, Any]) -> bytes:
    """One line of a segment file: RFC 8785 of the entry plus its `record_hash`, then LF.

    `row` is an entry plus `record_hash`, as `cdr_store.row_to_mapping` reads it back. JCS sorts
    the members, so `record_hash` lands between `record_type` and `ref_cdr_id`; the hashed entry
    is the line's object without that member."""
    return canonical_bytes(dict(row)) + b"\n"


@dataclasses.dataclass(frozen=True, slots=True)
class SegmentFileDigest:
    """Digests of a segment file (gzip) and of its content (the JSON lines, uncompressed)."""

    sha256: str
    size: int
    content_sha256: str
    content_size: int


@dataclasses.dataclass(frozen=True, slots=True)
class SegmentManifest:
    """What a cold segment holds, in a form anyone can check the segment file against."""

    operator_id: str
    first_seq: int
    last_seq: int
    record_count: int
    prev_hash: str  # record_hash of the entry before first_seq (64 zeros for chain_seq 1)
    head_hash: str  # record_hash of last_seq
    done_at_min: str  # the earliest and latest done_at of its entries (format_utc)
    done_at_max: str
    segment_key: str
    segment_sha256: str  # of the gzip file as archived
    segment_size: int
    content_sha256: str  # of the JSON lines after decompression (stable across gzip implementations)
    content_size: int

    @property
    def range(self) -> SegmentRange:
        return SegmentRange(self.operator_id, self.first_seq, self.last_seq)

    @property
    def start(self) -> ChainHead:
        """The chain head the segment continues from."""
        return ChainHead(self.operator_id, self.first_seq - 1, self.prev_hash)

    @property
    def head(self) -> ChainHead:
        return ChainHead(self.operator_id, self.last_seq, self.head_hash)

    def to_dict(self) -> dict[str, Any]:
        return {"format": MANIFEST_FORMAT, **dataclasses.asdict(self)}

    def to_bytes(self) -> bytes:
        """The manifest file: RFC 8785, so the same segment always has byte-identical manifests."""
        return canonical_bytes(self.to_dict())

    @classmethod
    def from_bytes(cls, raw: bytes) -> "SegmentManifest":
        try:
            value = loads_strict(raw)
        except StrictJsonError as exc:
            raise ManifestInvalid(f"not JSON: {exc}") from None
        if not isinstance(value, dict) or value.get("format") != MANIFEST_FORMAT:
            raise ManifestInvalid(f"not a {MANIFEST_FORMAT} manifest")
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        if set(value) != set(fields) | {"format"}:
            raise ManifestInvalid(f"members must be exactly {sorted(set(fields) | {'format'})}")
        for name in fields:
            expected = int if name in ("first_seq", "last_seq", "record_count", "segment_size", "content_size") else str
            if type(value[name]) is not expected:
                raise ManifestInvalid(f"{name} must be a{'n integer' if expected is int else ' string'}")
        value.pop("format")
        manifest = cls(**value)
        manifest._check()
        return manifest

    def _check(self) -> None:
        try:
            expected = SegmentRange(self.operator_id, self.first_seq, self.last_seq)
        except ValueError as exc:
            raise ManifestInvalid(str(exc)) from None
        problems = []
        if self.record_count != expected.record_count:
            problems.append(f"record_count {self.record_count} is not last_seq - first_seq + 1")
        if self.segment_key != expected.segment_key:
            problems.append(f"segment_key {self.segment_key!r} is not {expected.segment_key!r}")
        for name in ("prev_hash", "head_hash", "segment_sha256", "content_sha256"):
            if not _HEX64.fullmatch(getattr(self, name)):
                problems.append(f"{name} is not 64 lowercase hex digits")
        if self.first_seq == 1 and self.prev_hash != GENESIS_PREV_HASH:
            problems.append("a segment starting at chain_seq 1 must have the zero prev_hash")
        if not (_TIMESTAMP.fullmatch(self.done_at_min) and _TIMESTAMP.fullmatch(self.done_at_max)
                and self.done_at_min <= self.done_at_max):
            problems.append("done_at_min / done_at_max are not an ordered pair of UTC timestamps")
        if self.segment_size < 0 or self.content_size < 0:
            problems.append("sizes must not be negative")
        if problems:
            raise ManifestInvalid("; ".join(problems))


class SegmentContent:
    """Accumulates a segment's lines as they are written: digest, size, count, done_at range.

    Pure bookkeeping; the caller writes the bytes `add` returns (codecs/cold_segment.py)."""

    def __init__(self, segment: SegmentRange) -> None:
        self.segment = segment
        self._digest = hashlib.sha256()
        self.size = 0
        self.count = 0
        self.done_at_min: str | None = None
        self.done_at_max: str | None = None

    def add(self, row: Mapping[str, Any]) -> bytes:
        line = segment_line(row)
        self._digest.update(line)
        self.size += len(line)
        self.count += 1
        done_at = row["done_at"]
        # format_utc strings are fixed-width, so their string order is time order.
        if self.done_at_min is None or done_at < self.done_at_min:
            self.done_at_min = done_at
        if self.done_at_max is None or done_at > self.done_at_max:
            self.done_at_max = done_at
        return line

    @property
    def content_sha256(self) -> str:
        return self._digest.hexdigest()

    def manifest(self, *, prev_hash: str, head_hash: str, file: SegmentFileDigest) -> SegmentManifest:
        if self.count != self.segment.record_count or self.done_at_min is None or self.done_at_max is None:
            raise ValueError(f"segment {self.segment.stem}: {self.count} lines written, "
                             f"{self.segment.record_count} expected")
        if (file.content_sha256, file.content_size) != (self.content_sha256, self.size):
            raise ValueError(f"segment {self.segment.stem}: the file's content is not the lines written")
        manifest = SegmentManifest(
            operator_id=self.segment.operator_id, first_seq=self.segment.first_seq, last_seq=self.segment.last_seq,
            record_count=self.count, prev_hash=prev_hash, head_hash=head_hash, done_at_min=self.done_at_min,
            done_at_max=self.done_at_max, segment_key=self.segment.segment_key, segment_sha256=file.sha256,
            segment_size=file.size, content_sha256=file.content_sha256, content_size=file.content_size)
        manifest._check()
        return manifest


@dataclasses.dataclass(frozen=True, slots=True)
class SegmentCheck:
    """The result of checking a segment's lines against its manifest.

    `first_bad_seq` is the first chain_seq at which the lines stop being the manifest's chain
    (the chain verifier's break; last_seq + 1 for lines beyond the head). It is None when the
    segment is intact, and also when the chain is intact but the bytes are not the archived ones."""

    manifest: SegmentManifest
    verified: int  # lines found valid before the first problem
    first_bad_seq: int | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def to_dict(self) -> dict[str, Any]:
        report: dict[str, Any] = {**self.manifest.range.to_dict(), "ok": self.ok, "verified": self.verified}
        if not self.ok:
            report["first_bad_seq"] = self.first_bad_seq
            report["problem"] = self.problem
        return report


def verify_segment_lines(manifest: SegmentManifest, lines: Iterable[bytes]) -> SegmentCheck:
    """Check a segment's lines (decompressed, in file order) against its manifest.

    Every line is parsed strictly (no duplicate members, no NaN) and the chain is recomputed with
    the chain verifier from the manifest's `prev_hash` at `first_seq - 1` to its `head_hash` at
    `last_seq` (`chain.verify_chain`, docs/chain.md §6.1): a changed, missing, added or reordered
    line is reported at the first chain_seq it breaks. An intact chain must also be exactly the
    manifest's content (count, size and SHA-256 of the lines)."""
    digest = hashlib.sha256()
    size = 0
    unparseable: list[str] = []

    def rows() -> Iterator[Any]:
        nonlocal size
        for line in lines:
            digest.update(line)
            size += len(line)
            try:
                yield loads_strict(line)
            except StrictJsonError as exc:
                unparseable.append(str(exc))
                yield None  # not a mapping: the verifier reports a malformed row at this position
    verification: ChainVerification = verify_chain(manifest.operator_id, rows(), start=manifest.start,
                                                   expected_head=manifest.head)
    fault: ChainBreak | None = verification.first_break
    if fault is not None:
        found = unparseable[-1] if fault.kind is BreakKind.MALFORMED_ROW and unparseable else fault.found
        return SegmentCheck(manifest, verification.verified, fault.seq,
                            f"chain breaks at chain_seq {fault.seq}: {fault.kind.value} "
                            f"(expected {fault.expected}, found {found})")
    if verification.head.chain_seq != manifest.last_seq:
        return SegmentCheck(manifest, manifest.record_count, manifest.last_seq + 1,
                            f"lines continue after the manifest's last_seq {manifest.last_seq} "
                            f"(up to chain_seq {verification.head.chain_seq})")
    if (digest.hexdigest(), size) != (manifest.content_sha256, manifest.content_size):
        # The chain is intact but the bytes are not the ones archived (e.g. re-serialised lines).
        return SegmentCheck(manifest, verification.verified, None,
                            f"content is {size} bytes with sha256 {digest.hexdigest()}, the manifest states "
                            f"{manifest.content_size} bytes with sha256 {manifest.content_sha256}")
    return SegmentCheck(manifest, verification.verified, None, None)
