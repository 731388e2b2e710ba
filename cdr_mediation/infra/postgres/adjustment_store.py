"""Adjustment requests in PostgreSQL (migration 0007; domain/adjustment.py; docs/adjustments.md).

`create_adjustment` decides a request in ONE transaction: the `adjustment_request` row (which
holds the Idempotency-Key and the response), its `adjustment.create` audit entry and the outbox
message to the adjustment topic commit together or not at all (docs/audit.md §6). The relay then
publishes the message and the forwarder puts it in its operator's DLR log, where the ingest agent
applies it — or refuses it, when the chain has moved on since the portal looked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Mapping

import asyncpg

from cdr_mediation.codecs.canonical_json import canonical_bytes
from cdr_mediation.codecs.records import encode_adjustment
from cdr_mediation.domain.adjustment import AdjustmentRequest, ChainRefusal
from cdr_mediation.domain.audit import ADJUSTMENT_CREATE
from cdr_mediation.infra.postgres.audit_store import append_audit
from cdr_mediation.infra.postgres.cdr_store import fetch_entry, row_to_mapping, COLUMNS
from cdr_mediation.infra.postgres.outbox import enqueue
from cdr_mediation.observability.tracing import TRACEPARENT, current_traceparent


def body_sha256(document: Any) -> str:
    """SHA-256 of a posted body's RFC 8785 form: the same JSON, however it was spaced or ordered."""
    return hashlib.sha256(canonical_bytes(document)).hexdigest()


@dataclasses.dataclass(frozen=True)
class StoredRequest:
    body_sha256: str
    response: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class RecordVersions:
    """An original CDR as PostgreSQL holds it, and the entries that adjusted it (chain order)."""

    original: Mapping[str, Any]  # entry + record_hash
    adjustments: tuple[Mapping[str, Any], ...]

    @property
    def in_force(self) -> Mapping[str, Any]:
        """The latest version (the original, or its latest CORRECT / VOID)."""
        return self.adjustments[-1] if self.adjustments else self.original

    @property
    def voided(self) -> bool:
        return self.in_force["record_type"] == "VOID"


async def stored_request(conn, idempotency_key: str) -> StoredRequest | None:
    row = await conn.fetchrow("SELECT body_sha256, response FROM adjustment_request WHERE idempotency_key = $1",
                              idempotency_key)
    return None if row is None else StoredRequest(row["body_sha256"], json.loads(row["response"]))


async def record_versions(conn, cdr_id: str) -> RecordVersions | None:
    """The stored record `cdr_id` and its adjustments, or None if no entry has that id."""
    original = await fetch_entry(conn, cdr_id)
    if original is None:
        return None
    rows = await conn.fetch(f"SELECT {', '.join(COLUMNS)} FROM cdr WHERE operator_id = $1 AND ref_cdr_id = $2 "
                            "ORDER BY chain_seq", original["operator_id"], cdr_id)
    return RecordVersions(original, tuple(row_to_mapping(row) for row in rows))


async def pending_adjustments(conn, ref_cdr_id: str) -> list[str]:
    """adjustment_ids of accepted requests for the record that are neither in the chain's store
    nor refused by the chain yet."""
    rows = await conn.fetch(
        "SELECT r.adjustment_id::text AS id FROM adjustment_request r WHERE r.ref_cdr_id = $1 "
        "AND NOT EXISTS (SELECT 1 FROM cdr c WHERE c.cdr_id = r.cdr_id::text) "
        "AND NOT EXISTS (SELECT 1 FROM adjustment_refusal f WHERE f.adjustment_id = r.adjustment_id) "
        "ORDER BY r.created_at", ref_cdr_id)
    return [row["id"] for row in rows]


async def create_adjustment(conn, *, idempotency_key: str, body_digest: str, request: AdjustmentRequest,
                            response: Mapping[str, Any], request_id: str, actor_role: str, topic: str) -> StoredRequest:
    """Record an accepted request, its audit entry and its outbox message in one transaction.

    Returns what is stored under the key: this request's, or — when a concurrent request with the
    same key committed first — that one's (the caller compares `body_sha256`)."""
    try:
        async with conn.transaction():
            audit = await append_audit(
                conn, actor=request.actor, actor_role=actor_role, action=ADJUSTMENT_CREATE, request_id=request_id,
                refs={"operator_id": request.operator_id, "cdr_id": request.ref_cdr_id,
                      "adjustment_id": request.adjustment_id},
                detail={"kind": request.kind.value, "ticket_ref": request.ticket_ref,
                        "supersedes_hash": request.current_hash, "adjustment_cdr_id": request.cdr_id})
            await conn.execute(
                "INSERT INTO adjustment_request (idempotency_key, body_sha256, adjustment_id, operator_id, kind, "
                "ref_cdr_id, cdr_id, actor, ticket_ref, request, response, audit_seq) "
                "VALUES ($1, $2, $3::uuid, $4, $5, $6::uuid, $7::uuid, $8, $9, $10::jsonb, $11::jsonb, $12)",
                idempotency_key, body_digest, request.adjustment_id, request.operator_id, request.kind.value,
                request.ref_cdr_id, request.cdr_id, request.actor, request.ticket_ref,
                json.dumps(request.to_dict()), json.dumps(dict(response)), audit.audit_seq)
            # The request's trace (the portal's span) continues on the chain: relay → forwarder → ingest.
            trace_parent = current_traceparent()
            await enqueue(conn, topic, request.operator_id.encode(), encode_adjustment(request),
                          {"adjustment-id": request.adjustment_id, **({TRACEPARENT: trace_parent} if trace_parent else {})})
    except asyncpg.UniqueViolationError:
        stored = await stored_request(conn, idempotency_key)
        if stored is None:
            raise
        return stored
    return StoredRequest(body_digest, dict(response))


async def adjustment_status(conn, adjustment_id: str) -> dict[str, Any] | None:
    """The stored response of a request, with `status` applied (and its chain_seq) once its entry
    is in the store; None for an unknown id."""
    row = await conn.fetchrow("SELECT response, cdr_id::text AS cdr_id FROM adjustment_request "
                              "WHERE adjustment_id = $1::uuid", adjustment_id)
    if row is None:
        return None
    result = json.loads(row["response"])
    seq = await conn.fetchval("SELECT chain_seq FROM cdr WHERE cdr_id = $1", row["cdr_id"])
    if seq is not None:
        result.update(status="applied", chain_seq=seq)
        return result
    refusal = await conn.fetchrow("SELECT code, detail FROM adjustment_refusal WHERE adjustment_id = $1::uuid",
                                  adjustment_id)
    if refusal is not None:
        result.update(status="refused", refusal={"code": refusal["code"], "detail": refusal["detail"]})
    return result


async def record_chain_refusal(conn, refusal: ChainRefusal) -> int:
    """Keep a refusal by the chain (1 if new, 0 if already kept: the CDR topic may deliver it
    again). The first one stands: the chain refuses a request once (domain/ingest.py)."""
    status = await conn.execute(
        "INSERT INTO adjustment_refusal (adjustment_id, operator_id, ref_cdr_id, code, detail) "
        "VALUES ($1::uuid, $2, $3::uuid, $4, $5) ON CONFLICT (adjustment_id) DO NOTHING",
        refusal.adjustment_id, refusal.operator_id, refusal.ref_cdr_id, refusal.code, refusal.detail)
    return int(status.rsplit(" ", 1)[1])
