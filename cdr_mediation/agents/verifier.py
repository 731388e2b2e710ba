"""Verification of what PostgreSQL holds: every stored chain recomputed (first break reported) and
every export file's checkpoints recomputed from its rows and their signatures checked
(`agents/checkpoint_verifier.py`) — one run, one report, one audit row (docs/verification.md).

A verification run is itself recorded: `record_verification` appends one `chain.verify` row to
the audit log (docs/audit.md) with every operator's result and head and every file's checkpoint
verdict, so the log shows when the chains were last found intact, and up to where. The latest
such row covering an operator is also what halts that operator's exports under
CDR_CHAIN_VERIFY_FAIL_FAST (`unresolved_break`), and a later intact one lifts the halt.

Every run is a full one: each stored row is recomputed each time. Starting from the head the
last intact run recorded would only prove that head's row unchanged, not the rows behind it,
and a row rewritten behind the triggers is exactly what a verification must find.

Runs do not overlap: `run_verification` holds a PostgreSQL advisory lock for the run and
raises `VerificationBusy` when another session holds it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from prometheus_client import Counter, Gauge

from cdr_mediation.agents.checkpoint_verifier import verify_stored_checkpoints
from cdr_mediation.domain.audit import CHAIN_VERIFY, SYSTEM_ROLE, AuditEntry
from cdr_mediation.domain.chain import ChainVerification, verify_chain
from cdr_mediation.domain.verification import CheckpointVerdict, operator_verdicts, run_ok
from cdr_mediation.infra.postgres.audit_store import append_audit
from cdr_mediation.infra.postgres.cdr_store import iter_chain_pages, operators
from cdr_mediation.infra.postgres.cold_segment_store import cold_head
from cdr_mediation.infra.postgres.verification_store import (
    SCOPE_ALL,
    SCOPE_OPERATORS,
    RecordedVerification,
    audit_time,
    full_runs,
    latest_verification_of,
    release_verification_lock,
    try_verification_lock,
)

log = logging.getLogger(__name__)

VERIFIER_ACTOR = "verifier"
CHAIN_BREAKS = Counter("cdr_chain_breaks_total", "Chain verifications that found a break", ["operator_id"])
CHECKPOINT_MISMATCHES = Counter("cdr_checkpoint_mismatches_total", "Export files whose recorded checkpoint or "
                                "its signature disagrees with the stored rows", ["operator_id"])
RUNS = Counter("cdr_chain_verify_runs_total", "Verification runs by result: ok, failed (a break or a mismatch), "
                                              "skipped (another run held the lock), error (could not finish)",
               ["result"])
LAST_SUCCESS = Gauge("cdr_chain_verify_last_success_timestamp_seconds",
                     "When a verification of all operators last found everything intact (audit row time; "
                     "0 = not known to this process)")


class VerificationBusy(RuntimeError):
    """Another session is running a verification (it holds the advisory lock)."""


async def verify_stored_chain(conn, operator_id: str) -> ChainVerification:
    """Verify what `cdr` holds of the operator's chain. Entries released to the cold tier are
    not there: the hot rows must continue the head of the last archived segment (recorded in
    `cdr_cold_segment`); the segments themselves are checked by `cdrmed archive verify`.

    A page of rows at a time, each page continuing the head the previous one reached (bounded
    memory: a chain of 13 months is billions of rows), hashed in a worker thread so that the
    event loop of the worker or portal running the verification keeps serving."""
    head, verified = await cold_head(conn, operator_id), 0
    async for rows in iter_chain_pages(conn, operator_id, from_seq=head.chain_seq + 1):
        page = await asyncio.to_thread(verify_chain, operator_id, rows, start=head)
        if page.first_break is not None:
            CHAIN_BREAKS.labels(operator_id=operator_id).inc()
            fault = page.first_break
            if fault.index is not None:  # counted from the first row verified, as over one list of rows
                fault = dataclasses.replace(fault, index=verified + fault.index)
            return ChainVerification(operator_id, verified + page.verified, page.head, fault)
        head, verified = page.head, verified + page.verified
    return ChainVerification(operator_id, verified, head, None)


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


@dataclasses.dataclass(frozen=True)
class VerificationRun:
    """One run's findings: chains per operator, checkpoint verdicts per file."""

    chains: list[ChainVerification]
    checkpoints: list[CheckpointVerdict]
    scope: str  # SCOPE_ALL: every operator; SCOPE_OPERATORS: those asked for

    @property
    def ok(self) -> bool:
        return run_ok((result.ok for result in self.chains), self.checkpoints)

    @property
    def operator_ids(self) -> list[str]:
        """Every operator the run covered: those with a chain, then those with only files."""
        covered = [result.operator_id for result in self.chains]
        return covered + sorted({v.operator_id for v in self.checkpoints} - set(covered))

    def detail(self) -> dict[str, Any]:
        """The audit row's detail (docs/audit.md §1); `ok` and `results` as before checkpoints were
        verified, `checkpoints` and `scope` added."""
        return {"ok": self.ok, "scope": self.scope, "results": [verification_report(r) for r in self.chains],
                "checkpoints": [verdict.to_dict() for verdict in self.checkpoints]}

    def report(self, request_id: str) -> dict[str, Any]:
        """What `POST /v1/cdr/chain/verify` answers."""
        return {"ok": self.ok, "request_id": request_id, "results": [verification_report(r) for r in self.chains],
                "checkpoints": [verdict.to_dict() for verdict in self.checkpoints]}


async def record_verification(conn, results: list[ChainVerification], *, request_id: str,
                              actor: str = VERIFIER_ACTOR, actor_role: str = SYSTEM_ROLE,
                              checkpoints: Sequence[CheckpointVerdict] = (),
                              scope: str = SCOPE_OPERATORS) -> AuditEntry:
    """Append the run's `chain.verify` audit row (its own transaction, after the reading, so the
    audit lock is not held while chains are recomputed)."""
    run = VerificationRun(list(results), list(checkpoints), scope)
    async with conn.transaction():
        return await append_audit(conn, actor=actor, actor_role=actor_role, action=CHAIN_VERIFY,
                                  request_id=request_id, refs={"operator_ids": run.operator_ids}, detail=run.detail())


async def run_verification(conn, trust_anchors: Sequence[x509.Certificate], *, request_id: str,
                           operator_ids: list[str] | None = None, actor: str = VERIFIER_ACTOR,
                           actor_role: str = SYSTEM_ROLE, only_if_due_s: float | None = None) -> VerificationRun | None:
    """Verify the chains and checkpoints of `operator_ids` (None: every operator), record the run
    in the audit log, count and log it. Raises `VerificationBusy` if another run holds the lock.

    With `only_if_due_s` (the daily job), nothing is done — None is returned — when a run over all
    operators was recorded less than that many seconds ago by the database's clock; this is
    decided under the lock, so of several workers due at once only the first runs."""
    if not await try_verification_lock(conn):
        RUNS.labels(result="skipped").inc()
        raise VerificationBusy("another verification is running")
    try:
        if only_if_due_s is not None and not await _due(conn, only_if_due_s):
            return None
        started = time.monotonic()
        scope = SCOPE_ALL if operator_ids is None else SCOPE_OPERATORS
        run = VerificationRun(await verify_stored_chains(conn, operator_ids),
                              await verify_stored_checkpoints(conn, trust_anchors, operator_ids), scope)
        entry = await record_verification(conn, run.chains, request_id=request_id, actor=actor, actor_role=actor_role,
                                          checkpoints=run.checkpoints, scope=scope)
    except BaseException:
        RUNS.labels(result="error").inc()
        raise
    finally:
        try:
            await release_verification_lock(conn)
        except Exception as exc:  # noqa: BLE001 - must not hide the run's own outcome or error
            # The connection is unusable; the session lock ends with it (the caller closes it).
            log.warning("verification lock not released on a failed connection", extra={"error": repr(exc)})
    _account(run, entry, request_id, seconds=time.monotonic() - started)
    return run


async def _due(conn, interval_s: float) -> bool:
    runs = await full_runs(conn)
    if runs.last_ok_at is not None:
        LAST_SUCCESS.set(runs.last_ok_at.timestamp())
    return runs.last_at is None or (runs.now - runs.last_at).total_seconds() >= interval_s


def _account(run: VerificationRun, entry: AuditEntry, request_id: str, *, seconds: float) -> None:
    """Metrics and logs of a recorded run. Breaks and mismatches are logged critical: a person
    must find the cause (the log names seq, kind and hashes, never an entry's content)."""
    RUNS.labels(result="ok" if run.ok else "failed").inc()
    if run.ok and run.scope == SCOPE_ALL:
        LAST_SUCCESS.set(audit_time(entry.at).timestamp())  # the database's clock, as `_due` reads it
    for result in run.chains:
        if result.first_break is not None:
            log.critical("chain break found", extra={
                "operator_id": result.operator_id, "kind": result.first_break.kind.value,
                "seq": result.first_break.seq, "expected": result.first_break.expected,
                "found": result.first_break.found, "audit_seq": entry.audit_seq, "request_id": request_id})
    for verdict in run.checkpoints:
        if not verdict.ok:
            CHECKPOINT_MISMATCHES.labels(operator_id=verdict.operator_id).inc()
            log.critical("export checkpoint disagrees with the stored rows", extra={
                "operator_id": verdict.operator_id, "day": verdict.day, "file_name": verdict.file_name,
                "detail": verdict.detail, "audit_seq": entry.audit_seq, "request_id": request_id})
    log.info("verification recorded in the audit log", extra={
        "ok": run.ok, "scope": run.scope, "operators": len(run.chains),
        "rows": sum(result.verified for result in run.chains), "files": len(run.checkpoints),
        "skipped_files": sum(v.status.value == "skipped" for v in run.checkpoints),
        "seconds": round(seconds, 3), "audit_seq": entry.audit_seq, "request_id": request_id})


async def unresolved_break(conn, operator_id: str) -> RecordedVerification | None:
    """The latest recorded verification covering the operator if it found the operator broken
    (a chain break or a checkpoint mismatch), else None: exports of an operator with an
    unresolved break are halted under CDR_CHAIN_VERIFY_FAIL_FAST."""
    latest = await latest_verification_of(conn, operator_id)
    if latest is None or operator_verdicts(latest.detail).get(operator_id, True):
        return None
    return latest
