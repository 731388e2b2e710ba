"""What the bridge forwards: JetStream messages → per-operator DLR batches and dead letters.

Pure: the bridge shell fetches, calls `plan_forwarding`, produces, and acks. Within an operator
the order of the JetStream messages is kept; a batch is split where it would exceed the size
limits, never reordered.

The bridge does not parse DLRs. A DLR is validated once, by the ingest agent, which must parse
it anyway to project it and which dead-letters an invalid one with the same reasons (DLR v1
contract, `domain/dlr.py`) and its original bytes. Parsing here as well cost a fifth of the
bridge's CPU. What the bridge does check is what it needs to route a message without reading
it: the subject names an operator (`<subject_root>.<operator_id>`), the payload is not larger
than a DLR may be and it is UTF-8 (batch records carry DLRs as JSON strings). The batch key is the subject's operator; a payload naming another operator
is dead-lettered by the ingest agent (`subject_operator_mismatch`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from cdr_mediation.domain.dlr import MAX_DLR_BYTES, DlrReason

UNKNOWN_OPERATOR = "unknown"  # the dead-letter key of a message whose subject names no operator
NO_OPERATOR_SUBJECT = "no_operator_subject"


@dataclasses.dataclass(frozen=True, slots=True)
class InboundMessage:
    subject: str
    data: bytes
    stream_seq: int
    # The W3C ``traceparent`` header the publisher sent, if any (telemetry: never in the batch).
    trace_parent: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Rejected:
    message: InboundMessage
    operator_key: str  # from the subject when the payload could not say
    reason: str
    detail: str


@dataclasses.dataclass(frozen=True, slots=True)
class ForwardPlan:
    batches: tuple[tuple[str, tuple[bytes, ...]], ...]  # (operator_id, originals in order)
    rejected: tuple[Rejected, ...]
    # Per batch, the trace contexts its DLRs arrived with (the bridge's span links to them).
    batch_trace_parents: tuple[tuple[str, ...], ...] = ()


def subject_operator(subject: str, subject_root: str) -> str | None:
    """The operator a subject `<subject_root>.<operator_id>` names, or None."""
    prefix = subject_root + "."
    rest = subject[len(prefix):] if subject.startswith(prefix) else ""
    return rest if rest and "." not in rest else None


def plan_forwarding(
    messages: Sequence[InboundMessage], *, subject_root: str, max_batch_dlrs: int = 1000,
    max_batch_bytes: int = 512 * 1024,
) -> ForwardPlan:
    by_operator: dict[str, list[list[InboundMessage]]] = {}
    sizes: dict[str, int] = {}
    rejected: list[Rejected] = []
    for message in messages:
        operator_id = subject_operator(message.subject, subject_root)
        if operator_id is None:
            rejected.append(Rejected(message, UNKNOWN_OPERATOR, NO_OPERATOR_SUBJECT,
                                     f"subject {message.subject!r} is not {subject_root}.<operator_id>"))
            continue
        size = len(message.data)
        if size > MAX_DLR_BYTES:
            rejected.append(Rejected(message, operator_id, DlrReason.TOO_LARGE.value, f"{size} bytes > {MAX_DLR_BYTES}"))
            continue
        try:
            message.data.decode("utf-8")  # batch records carry DLRs as JSON strings
        except UnicodeDecodeError as exc:
            rejected.append(Rejected(message, operator_id, DlrReason.INVALID_ENCODING.value, f"not UTF-8: {exc}"))
            continue
        runs = by_operator.get(operator_id)
        if runs is None:
            runs = by_operator[operator_id] = [[]]
            sizes[operator_id] = 0
        if len(runs[-1]) >= max_batch_dlrs or sizes[operator_id] + size > max_batch_bytes:
            runs.append([])
            sizes[operator_id] = 0
        runs[-1].append(message)
        sizes[operator_id] += size
    # Operators in order of first appearance: deterministic for a given fetch.
    ordered = [(operator, run) for operator, runs in by_operator.items() for run in runs if run]
    return ForwardPlan(
        batches=tuple((operator, tuple(m.data for m in run)) for operator, run in ordered),
        rejected=tuple(rejected),
        batch_trace_parents=tuple(tuple(m.trace_parent for m in run if m.trace_parent) for _, run in ordered))
