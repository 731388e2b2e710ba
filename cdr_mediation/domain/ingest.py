"""The ingest step: one per-operator batch of raw DLRs -> CDRs, dead letters and new state.

Faust delivers at least once and Kafka transactions are unavailable here, so exactly-once comes
from state (DESIGN.md §4.5, §10). This module is the pure part; the agent is a thin shell.

State, per operator — ONE table value, so it changes atomically in the changelog:

    OperatorIngestState(operator_id, chain_seq, head_hash, applied_offset)

``applied_offset`` is the offset, in the DLR topic partition, of the last batch record of this
operator whose effects are all recorded. Dedup entries live under `dedup_key(operator_id,
dlr_id)`; each remembers the offset of the batch record that accepted it:

    DedupEntry(source_offset, cdr_id, chain_seq, fingerprint)

`apply_batch(state, batch, offset, …)`:

1. ``offset <= state.applied_offset``: the batch was applied and its outputs emitted before the
   state said so — return ``already_applied`` and do nothing.
2. Otherwise, per raw DLR in order: invalid -> dead letter; ``operator_id`` other than the
   batch's -> dead letter; then dedup. A dedup entry counts only if ``source_offset <=
   state.applied_offset`` — written by a batch whose state was recorded. An entry with a larger
   offset was written by an attempt that crashed before its state write (this batch, or a later
   one whose dedup write survived while its state write did not); it is ignored, so the
   re-processing recreates the same CDRs with the same chain_seq and hashes, and the idempotent
   sinks absorb the re-emission. A dlr_id repeated inside the batch is a duplicate of its first
   occurrence. A duplicate with the same fingerprint is dropped and counted; one with a different
   fingerprint (same dlr_id, different content) is dead-lettered as ``dlr_id_reused`` rather than
   silently dropped. A DLR with no price is dead-lettered and gets no dedup entry, so once the
   pricing is fixed the DLQ reprocessor can replay it.
3. Accepted DLRs are projected, linked after the chain head and given a dedup entry. The new
   state carries the new head and ``applied_offset = offset`` (also when every DLR was rejected).

Order of effects for the caller (the agent):

1. emit ``cdrs`` to the CDR topic and ``dead_letters`` to the DLQ (sinks idempotent: CDRs by
   ``cdr_id`` / (operator, chain_seq); dead letters by (operator, source_offset, batch_index));
2. write every ``dedup_writes`` item under `dedup_key`;
3. write ``new_state`` — only once 1 and 2 are complete (acknowledged).

1 and 2 may overlap: a dedup entry counts only once a state records its batch
(``source_offset <= applied_offset``), so one written before the outputs are acknowledged is inert
if the attempt dies. What must never happen is a durable state without its outputs or its dedup
entries.

A crash anywhere re-runs the batch with the old state and gives byte-identical outputs. Keep the
dedup entries and the state in ONE table (one changelog partition per source partition): records
of one partition become durable in order, so a durable state implies durable dedup entries. With
two tables a crash can keep a state write and lose the dedup writes before it, and a later
redelivery of those DLRs would be accepted twice. Offsets are only comparable within one
partition: the DLR topic's partition count must never change under live state.

Adjustments (VOID/CORRECT, `domain/adjustment.py`) are chain entries too, so they reach the
agent in the same ordered per-operator log as the DLRs: the adjustment forwarder copies each
request from the adjustment topic into the DLR topic partition of its operator
(`agents/adjustment_forwarder.py`). One log fixes one chain order — a replay of the DLR topic
reproduces the adjustments at the same places — and one ``applied_offset`` guards both kinds.
`apply_adjustment` follows the same rules as a batch: its table entries (the request under
`applied_adjustment_key`, the adjusted original under `adjusted_key`) carry the record's offset
and count only once a state records it; the caller emits, writes the entries, then the state.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Callable, Mapping, NamedTuple, Sequence

from cdr_mediation.domain.adjustment import (
    AdjustedRecord,
    AdjustmentRefused,
    AdjustmentRequest,
    ChainRefusal,
    OriginalRecord,
    RefusalCode,
    adjusted_after,
    adjustment_entry,
    check_against_chain,
)
from cdr_mediation.domain.cdr import GENESIS_PREV_HASH, Cdr
from cdr_mediation.domain.chain import ChainHead, entry_and_hash, link, next_position
from cdr_mediation.domain.dlr import Dlr, InvalidDlr, parse_dlr
from cdr_mediation.domain.pricing import NoPrice, PricingSnapshot
from cdr_mediation.domain.projection import project
from cdr_mediation.domain.source_position import NOTHING_APPLIED



class IngestReason(str, enum.Enum):
    """Dead-letter reasons added by the ingest step (besides `DlrReason` and `PricingReason`)."""

    # The DLR names another operator than its batch record's key, which the bridge takes from
    # the JetStream subject (`domain/bridging.py`).
    OPERATOR_MISMATCH = "subject_operator_mismatch"
    DLR_ID_REUSED = "dlr_id_reused"


@dataclasses.dataclass(frozen=True, slots=True)
class OperatorIngestState:
    operator_id: str
    chain_seq: int
    head_hash: str
    applied_offset: int

    @classmethod
    def initial(cls, operator_id: str) -> "OperatorIngestState":
        return cls(operator_id, 0, GENESIS_PREV_HASH, NOTHING_APPLIED)

    @property
    def head(self) -> ChainHead:
        return ChainHead(self.operator_id, self.chain_seq, self.head_hash)

    def to_dict(self) -> dict[str, Any]:
        # Field order as `dataclasses.asdict` (the same JSON bytes), without its deep copy.
        return {"operator_id": self.operator_id, "chain_seq": self.chain_seq, "head_hash": self.head_hash,
                "applied_offset": self.applied_offset}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> "OperatorIngestState":
        return cls(**value)


@dataclasses.dataclass(frozen=True, slots=True)
class DedupEntry:
    source_offset: int  # offset of the batch record that accepted the DLR
    cdr_id: str
    chain_seq: int
    fingerprint: str  # Dlr.fingerprint(): tells a redelivery from a reused dlr_id
    # The CDR's record_hash: an adjustment names the version it supersedes by its hash, and this
    # is the chain's own word for the original's (None in entries written before it was kept).
    record_hash: str | None = None

    def to_dict(self) -> dict[str, Any]:
        # One per accepted DLR: field order as `dataclasses.asdict` (the same JSON bytes, which
        # are the table's changelog values), without its recursive deep copy.
        return {"source_offset": self.source_offset, "cdr_id": self.cdr_id, "chain_seq": self.chain_seq,
                "fingerprint": self.fingerprint, "record_hash": self.record_hash}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> "DedupEntry":
        return cls(**value)


def dedup_key(operator_id: str, dlr_id: str) -> str:
    """Table key of a dedup entry. Scoped by operator because the guard compares the entry's
    offset with *that operator's* applied_offset. ``/`` cannot occur in an operator id."""
    return f"{operator_id}/{dlr_id}"


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    original: bytes  # the DLR exactly as received
    reason_code: str
    detail: str
    operator_id: str  # the batch's operator (the Kafka key), not a field of the rejected bytes
    source_offset: int
    batch_index: int


class LinkedCdr(NamedTuple):
    cdr: Cdr
    record_hash: str


@dataclasses.dataclass(frozen=True, slots=True)
class BatchOutcome:
    new_state: OperatorIngestState
    cdrs: tuple[LinkedCdr, ...]
    dedup_writes: Mapping[str, DedupEntry]  # dlr_id -> entry, in acceptance order
    dead_letters: tuple[DeadLetter, ...]
    duplicates: int
    already_applied: bool = False
    # `cdrs[i].cdr.to_entry()`, as hashed: the CDR record carries the same objects (the agent
    # need not rebuild them).
    entries: tuple[dict[str, Any], ...] = ()


class _ChainWriter:
    """Appends unlinked entries after a head; shared by DLR batches and (later) adjustments."""

    __slots__ = ("operator_id", "chain_seq", "head_hash", "linked", "entries")

    def __init__(self, head: ChainHead) -> None:
        self.operator_id, self.chain_seq, self.head_hash = head.operator_id, head.chain_seq, head.head_hash
        self.linked: list[LinkedCdr] = []
        self.entries: list[dict[str, Any]] = []

    @property
    def head(self) -> ChainHead:
        return ChainHead(self.operator_id, self.chain_seq, self.head_hash)

    def append(self, unlinked: Cdr) -> LinkedCdr:
        cdr, _ = link(self.head, unlinked)
        return self._appended(cdr, *entry_and_hash(cdr))

    def append_projection(self, dlr: Dlr, pricing: PricingSnapshot) -> LinkedCdr:
        """`append(project(dlr, pricing))`, building the linked entry directly (one `Cdr` instead
        of two on the DLR hot path). The caller has checked that the DLR is of this chain's
        operator, which is the one thing `link` would check besides the position."""
        chain_seq, prev_hash = next_position(self.head)
        cdr = project(dlr, pricing, chain_seq=chain_seq, prev_hash=prev_hash)
        return self._appended(cdr, *entry_and_hash(cdr))

    def _appended(self, cdr: Cdr, entry: dict[str, Any], digest: str) -> LinkedCdr:
        self.chain_seq, self.head_hash = cdr.chain_seq, digest
        result = LinkedCdr(cdr, digest)
        self.linked.append(result)
        self.entries.append(entry)
        return result


def apply_batch(
    state: OperatorIngestState,
    batch: Sequence[bytes],
    offset: int,
    pricing: PricingSnapshot,
    dedup_lookup: Callable[[str], DedupEntry | None],
) -> BatchOutcome:
    """Apply one batch record (raw DLRs of `state.operator_id`, in log order) at `offset`.

    `dedup_lookup(dlr_id)` reads this operator's dedup entries (key `dedup_key`). Pure: the
    result depends only on the arguments. See the module docstring for the caller's duties.
    """
    if offset <= state.applied_offset:
        return BatchOutcome(state, (), {}, (), 0, already_applied=True)
    step = BatchStep(state, offset, pricing, dedup_lookup)
    step.feed(batch)
    return step.outcome()


class BatchStep:
    """`apply_batch` in slices, for a batch not already applied (``offset > applied_offset``).

    `feed` the batch's DLRs in order, in as many calls as wanted, then take `outcome()`: the
    DLRs are processed one by one in order either way, so the outcome is the same whatever the
    slicing. The agent slices a batch so that its event loop can serve the other agents of the
    worker in between (a whole batch is ~10-20 ms of pure Python). `dedup_lookup` must read the
    same entries for the whole batch (nothing writes them until the outcome is recorded).
    """

    __slots__ = ("state", "offset", "pricing", "dedup_lookup", "writer", "accepted", "dead", "duplicates",
                 "next_index")

    def __init__(self, state: OperatorIngestState, offset: int, pricing: PricingSnapshot,
                 dedup_lookup: Callable[[str], DedupEntry | None]) -> None:
        if offset <= state.applied_offset:
            raise ValueError("batch already applied: check offset <= state.applied_offset first")
        self.state, self.offset, self.pricing, self.dedup_lookup = state, offset, pricing, dedup_lookup
        self.writer = _ChainWriter(state.head)
        self.accepted: dict[str, DedupEntry] = {}
        self.dead: list[DeadLetter] = []
        self.duplicates = 0
        self.next_index = 0  # position in the batch of the next DLR fed

    def _reject(self, index: int, raw: bytes, reason: str, detail: str) -> None:
        self.dead.append(DeadLetter(bytes(raw), reason, detail, self.state.operator_id, self.offset, index))

    def feed(self, raws: Sequence[bytes]) -> None:
        """Process the next DLRs of the batch, in order."""
        operator_id, offset, applied_offset = self.state.operator_id, self.offset, self.state.applied_offset
        writer, accepted, pricing, dedup_lookup = self.writer, self.accepted, self.pricing, self.dedup_lookup
        for index, raw in enumerate(raws, start=self.next_index):
            try:
                dlr = parse_dlr(raw)
            except InvalidDlr as exc:
                self._reject(index, raw, exc.reason_code, exc.detail)
                continue
            if dlr.operator_id != operator_id:
                self._reject(
                    index, raw, IngestReason.OPERATOR_MISMATCH.value,
                    f"DLR of operator {dlr.operator_id!r} published on the subject of operator {operator_id!r}",
                )
                continue

            fingerprint = dlr.fingerprint()
            seen = accepted.get(dlr.dlr_id)
            if seen is None:
                prior = dedup_lookup(dlr.dlr_id)
                if prior is not None and prior.source_offset <= applied_offset:
                    seen = prior  # accepted by a batch whose state was recorded
            if seen is not None:
                if seen.fingerprint == fingerprint:
                    self.duplicates += 1
                else:
                    self._reject(
                        index, raw, IngestReason.DLR_ID_REUSED.value,
                        f"dlr_id already became cdr {seen.cdr_id} (chain_seq {seen.chain_seq}) "
                        "with different content",
                    )
                continue

            try:
                cdr, digest = writer.append_projection(dlr, pricing)
            except NoPrice as exc:
                self._reject(index, raw, exc.reason_code, exc.detail)
                continue
            accepted[dlr.dlr_id] = DedupEntry(offset, cdr.cdr_id, cdr.chain_seq, fingerprint, digest)
        self.next_index += len(raws)

    def outcome(self) -> BatchOutcome:
        """What the DLRs fed so far amount to (the whole batch, once all of it was fed)."""
        head = self.writer.head
        return BatchOutcome(
            new_state=OperatorIngestState(self.state.operator_id, head.chain_seq, head.head_hash, self.offset),
            cdrs=tuple(self.writer.linked),
            dedup_writes=dict(self.accepted),
            dead_letters=tuple(self.dead),
            duplicates=self.duplicates,
            entries=tuple(self.writer.entries),
        )


# --- adjustments --------------------------------------------------------------------------------

def applied_adjustment_key(operator_id: str, adjustment_id: str) -> str:
    """Table key of a request the chain has seen (applied or refused). Cannot meet a dedup key:
    those begin with an operator id, which has no ':'."""
    return f"adj:{operator_id}/{adjustment_id}"


def adjusted_key(operator_id: str, cdr_id: str) -> str:
    """Table key of an original CDR that has been adjusted (`AdjustedRecord`)."""
    return f"adjusted:{operator_id}/{cdr_id}"


@dataclasses.dataclass(frozen=True, slots=True)
class AdjustmentOutcome:
    new_state: OperatorIngestState
    linked: LinkedCdr | None = None  # the chain entry, when applied
    entry: dict[str, Any] | None = None  # linked.cdr.to_entry(), as hashed
    supersedes: Mapping[str, Any] | None = None  # the version it replaces (rollups net it out)
    table_writes: Mapping[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # full keys
    refused: DeadLetter | None = None
    # For a decoded request the chain refused: what the store records against its adjustment_id.
    chain_refusal: ChainRefusal | None = None
    duplicate: bool = False
    already_applied: bool = False


def apply_adjustment(
    state: OperatorIngestState,
    request: AdjustmentRequest | AdjustmentRefused,
    original_bytes: bytes,
    offset: int,
    lookup: Callable[[str], Mapping[str, Any] | None],
) -> AdjustmentOutcome:
    """Apply one adjustment record of `state.operator_id` found at `offset` of the DLR topic.

    `request` is the decoded request, or the refusal its decoding raised (then it is dead-lettered
    with `original_bytes`). `lookup(key)` reads the ingest table by full key (dedup entries,
    `applied_adjustment_key`, `adjusted_key`). Pure; the caller's duties are those of
    `apply_batch`: emit (the entry with `supersedes`, or the dead letter), write `table_writes`,
    then write `new_state`.
    """
    if offset <= state.applied_offset:
        return AdjustmentOutcome(state, already_applied=True)
    operator_id, applied_offset = state.operator_id, state.applied_offset
    done = OperatorIngestState(operator_id, state.chain_seq, state.head_hash, offset)

    def recorded(key: str) -> Mapping[str, Any] | None:
        value = lookup(key)
        return value if value is not None and value["source_offset"] <= applied_offset else None

    def refused(code: str, detail: str, writes: Mapping[str, dict[str, Any]] | None = None, *,
                of_request: bool = True) -> AdjustmentOutcome:
        letter = DeadLetter(bytes(original_bytes), code, detail, operator_id, offset, 0)
        # Recorded against the request's id only when the id is this request's: a reused id
        # belongs to the request already applied under it.
        refusal = (ChainRefusal(request.adjustment_id, operator_id, request.ref_cdr_id, code, detail)
                   if of_request and isinstance(request, AdjustmentRequest) else None)
        return AdjustmentOutcome(done, table_writes=dict(writes or {}), refused=letter, chain_refusal=refusal)

    if isinstance(request, AdjustmentRefused):
        return refused(request.code.value, request.message)
    if request.operator_id != operator_id:
        return refused(IngestReason.OPERATOR_MISMATCH.value,
                       f"adjustment of operator {request.operator_id!r} in the log of operator {operator_id!r}")
    request_key = applied_adjustment_key(operator_id, request.adjustment_id)
    fingerprint = request.fingerprint()
    seen = recorded(request_key)
    if seen is not None:
        if seen["fingerprint"] == fingerprint:
            return AdjustmentOutcome(done, duplicate=True)  # the forwarder delivered it again
        return refused(RefusalCode.ADJUSTMENT_ID_REUSED.value,
                       f"adjustment_id {request.adjustment_id} was already used for another request",
                       of_request=False)

    original_entry = recorded(dedup_key(operator_id, request.current["dlr_id"]))
    original = None if original_entry is None else OriginalRecord(
        original_entry["cdr_id"], original_entry["chain_seq"], original_entry.get("record_hash"))
    target_key = adjusted_key(operator_id, request.ref_cdr_id)
    adjusted_value = recorded(target_key)
    adjusted = None if adjusted_value is None else AdjustedRecord.from_dict(adjusted_value)
    try:
        check_against_chain(request, original, adjusted)
    except AdjustmentRefused as exc:
        # Remembered as seen, so a redelivery is a duplicate, not a second dead letter.
        seen_refused = DedupEntry(offset, "", 0, fingerprint, None)
        return refused(exc.code.value, exc.message, {request_key: seen_refused.to_dict()})

    writer = _ChainWriter(state.head)
    linked = writer.append(adjustment_entry(request))
    cdr, digest = linked
    return AdjustmentOutcome(
        new_state=OperatorIngestState(operator_id, cdr.chain_seq, digest, offset),
        linked=linked,
        entry=writer.entries[0],
        supersedes=dict(request.current),
        table_writes={
            request_key: DedupEntry(offset, cdr.cdr_id, cdr.chain_seq, fingerprint, digest).to_dict(),
            target_key: adjusted_after(request, offset, cdr.chain_seq, digest).to_dict(),
        },
    )
