"""What the bridge forwards: per-operator batches in order, split at the limits, and dead letters."""

from __future__ import annotations

import json

from cdr_mediation.domain.bridging import (
    NO_OPERATOR_SUBJECT,
    UNKNOWN_OPERATOR,
    InboundMessage,
    plan_forwarding,
    subject_operator,
)
from cdr_mediation.domain.dlr import MAX_DLR_BYTES

ROOT = "dlr.v1"


def _msg(operator_id: str, n: int, *, subject: str | None = None, data: bytes | None = None) -> InboundMessage:
    payload = data if data is not None else json.dumps({"dlr_id": f"{operator_id}-{n}"}).encode()
    return InboundMessage(subject or f"{ROOT}.{operator_id}", payload, n)


def test_subject_names_the_operator_only_directly_under_the_root() -> None:
    assert subject_operator("dlr.v1.op-a", ROOT) == "op-a"
    assert subject_operator("dlr.v1.op-a.extra", ROOT) is None
    assert subject_operator("dlr.v1.", ROOT) is None
    assert subject_operator("dlr.v2.op-a", ROOT) is None
    assert subject_operator("dlr.v1op-a", ROOT) is None


def test_batches_keep_each_operators_order_and_operators_appear_in_first_seen_order() -> None:
    messages = [_msg("op-b", 1), _msg("op-a", 2), _msg("op-b", 3), _msg("op-a", 4), _msg("op-b", 5)]
    plan = plan_forwarding(messages, subject_root=ROOT)
    assert [op for op, _ in plan.batches] == ["op-b", "op-a"]
    assert dict(plan.batches) == {
        "op-b": (messages[0].data, messages[2].data, messages[4].data),
        "op-a": (messages[1].data, messages[3].data),
    }
    assert plan.rejected == ()


def test_a_batch_is_split_at_the_count_limit_without_reordering() -> None:
    messages = [_msg("op-a", n) for n in range(7)]
    plan = plan_forwarding(messages, subject_root=ROOT, max_batch_dlrs=3)
    assert [len(batch) for _, batch in plan.batches] == [3, 3, 1]
    assert [raw for _, batch in plan.batches for raw in batch] == [m.data for m in messages]


def test_a_batch_is_split_at_the_byte_limit() -> None:
    messages = [_msg("op-a", n, data=b"x" * 400) for n in range(5)]
    plan = plan_forwarding(messages, subject_root=ROOT, max_batch_bytes=1000)
    assert [len(batch) for _, batch in plan.batches] == [2, 2, 1]


def test_payloads_are_forwarded_unparsed_so_the_ingest_agent_judges_them() -> None:
    # Not JSON, and a DLR naming another operator than its subject: both travel on, byte for byte.
    garbage = _msg("op-a", 1, data=b"{not json")
    other = _msg("op-a", 2, data=json.dumps({"operator_id": "op-z"}).encode())
    plan = plan_forwarding([garbage, other], subject_root=ROOT)
    assert plan.batches == (("op-a", (garbage.data, other.data)),)


def test_a_subject_without_operator_and_an_oversized_payload_are_dead_lettered_with_reasons() -> None:
    stray = _msg("op-a", 1, subject="dlr.v1.op-a.sub")
    huge = _msg("op-a", 2, data=b"{" + b" " * MAX_DLR_BYTES + b"}")
    binary = _msg("op-b", 3, data=b"\xff\xfe not utf-8")
    fine = _msg("op-a", 4)
    plan = plan_forwarding([stray, huge, binary, fine], subject_root=ROOT)
    assert plan.batches == (("op-a", (fine.data,)),)
    assert [(r.message, r.operator_key, r.reason) for r in plan.rejected] == [
        (stray, UNKNOWN_OPERATOR, NO_OPERATOR_SUBJECT),
        (huge, "op-a", "too_large"),
        (binary, "op-b", "invalid_encoding"),
    ]
    assert all(r.detail for r in plan.rejected)
