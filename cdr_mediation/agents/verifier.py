"""Chain verification of what PostgreSQL holds: every stored row recomputed, first break reported.

A verification run is itself recorded: `record_verification` appends one `chain.verify` row to
the audit log (docs/audit.md) with every operator's result and head, so the log shows when the
chains were last found intact, and up to where.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from prometheus_client import Counter

from cdr_mediation.domain.audit import CHAIN_VERIFY, SYSTEM_ROLE, AuditEntry
from cdr_mediation.domain.chain import ChainVerification, verify_chain
from cdr_mediation.infra.postgres.audit_store import append_audit
from cdr_mediation.infra.postgres.cdr_store import iter_chain, operators
from cdr_mediation.infra.postgres.cold_segment_store import cold_head

VERIFIER_ACTOR = "verifier"
CHAIN_BREAKS = Counter("cdr_chain_breaks_total", "Chain verifications that found a break", ["operator_id"])


async def verify_stored_chain(conn, operator_id: str) -> ChainVerification:
    """Verify what `cdr` holds of the operator's chain. Entries released to the cold tier are
    not there: the hot rows must continue the head of the last archived segment (recorded in
    `cdr_cold_segment`); the segments themselves are checked by `cdrmed archive verify`."""
    start = await cold_head(conn, operator_id)
    rows = [row async for row in iter_chain(conn, operator_id, from_seq=start.chain_seq + 1)]
    result = verify_chain(operator_id, rows, start=start)
    if not result.ok:
        CHAIN_BREAKS.labels(operator_id=operator_id).inc()
    return result


async def verify_stored_chains(conn, operator_ids: list[str] | None = None) -> list[ChainVerification]:
    return [await verify_stored_chain(conn, op) for op in (operator_ids or await operators(conn))]


def verification_report(result: ChainVerification) -> dict[str, Any]:
    report: dict[str, Any] = {
        "operator_id": result.operator_id,
        "ok": result.ok,
        "verified": result.verified,
        "head": {"chain_seq": result.head.chain_seq, "head_hash": result.head.head_hash},
    }
    if result.first_break is not None:
        fault = dataclasses.asdict(result.first_break)
        fault["kind"] = result.first_break.kind.value
        report["first_break"] = fault
    return report


async def record_verification(conn, results: list[ChainVerification], *, request_id: str,
                              actor: str = VERIFIER_ACTOR) -> AuditEntry:
    """Append the run's `chain.verify` audit row (its own transaction, after the reading, so the
    audit lock is not held while chains are recomputed)."""
    async with conn.transaction():
        return await append_audit(
            conn, actor=actor, actor_role=SYSTEM_ROLE, action=CHAIN_VERIFY, request_id=request_id,
            refs={"operator_ids": [result.operator_id for result in results]},
            detail={"ok": bool(results) and all(result.ok for result in results),
                    "results": [verification_report(result) for result in results]})
