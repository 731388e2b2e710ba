"""What the bridge forwards: JetStream messages → per-operator DLR batches and dead letters.

Pure: the bridge shell fetches, calls `plan_forwarding`, produces, and acks. Within an operator
the order of the JetStream messages is kept; a batch is split where it would exceed the size
limits, never reordered.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from cdr_mediation.domain.dlr import InvalidDlr, parse_dlr

UNKNOWN_OPERATOR = "unknown"
SUBJECT_OPERATOR_MISMATCH = "subject_operator_mismatch"


@dataclasses.dataclass(frozen=True, slots=True)
class InboundMessage:
    subject: str
    data: bytes
    stream_seq: int


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


def subject_operator(subject: str, subject_root: str) -> str:
    """The operator a subject `<subject_root>.<operator_id>` names, or "unknown"."""
    prefix = subject_root + "."
    rest = subject[len(prefix):] if subject.startswith(prefix) else ""
    return rest if rest and "." not in rest else UNKNOWN_OPERATOR


def plan_forwarding(
    messages: Sequence[InboundMessage], *, subject_root: str, max_batch_dlrs: int = 1000,
    max_batch_bytes: int = 512 * 1024,
) -> ForwardPlan:
    by_operator: dict[str, list[list[bytes]]] = {}
    sizes: dict[str, int] = {}
    rejected: list[Rejected] = []
    for message in messages:
        from_subject = subject_operator(message.subject, subject_root)
        try:
            dlr = parse_dlr(message.data)
        except InvalidDlr as exc:
            rejected.append(Rejected(message, from_subject, exc.reason_code, exc.detail))
            continue
        if dlr.operator_id != from_subject:
            rejected.append(Rejected(message, from_subject, SUBJECT_OPERATOR_MISMATCH,
                                     f"subject {message.subject!r} carries a DLR of operator {dlr.operator_id!r}"))
            continue
        runs = by_operator.setdefault(dlr.operator_id, [[]])
        if len(runs[-1]) >= max_batch_dlrs or sizes.get(dlr.operator_id, 0) + len(message.data) > max_batch_bytes:
            runs.append([])
            sizes[dlr.operator_id] = 0
        runs[-1].append(message.data)
        sizes[dlr.operator_id] = sizes.get(dlr.operator_id, 0) + len(message.data)
    # Operators in order of first appearance: deterministic for a given fetch.
    batches = tuple((operator, tuple(run)) for operator, runs in by_operator.items() for run in runs if run)
    return ForwardPlan(batches=batches, rejected=tuple(rejected))
