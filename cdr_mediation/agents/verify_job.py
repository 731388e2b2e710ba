"""The daily verification job: a timer on every worker that runs the exporter agent
(docs/verification.md §3).

Every `check_period(CDR_CHAIN_VERIFY_INTERVAL_S)` each such worker asks PostgreSQL whether a
verification of all operators is due — none recorded in the audit log within the last
CDR_CHAIN_VERIFY_INTERVAL_S by the database's clock — and if so runs it
(`verifier.run_verification`). Due-ness is read from the audit log rather than kept in the
process, so restarting workers more often than the interval neither skips nor repeats a run,
and a run started by hand (`cdrmed verify` without `--operator`, or the portal without an
operator) counts as well. The advisory lock and the due check under it make several workers
harmless: one runs, the others skip. Each run uses a connection of its own, not the exporter's,
so a long run never holds up an export step.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import faust

from cdr_mediation.agents.verifier import RUNS, VerificationBusy, VerificationRun, run_verification
from cdr_mediation.infra.cms_verify import load_trust_anchors
from cdr_mediation.infra.postgres.audit_store import new_request_id
from cdr_mediation.settings import Settings

log = logging.getLogger(__name__)

MAX_CHECK_PERIOD_S = 300.0  # how late a due run may start (one cheap query per check)


def check_period(interval_s: float) -> float:
    return min(interval_s, MAX_CHECK_PERIOD_S)


class VerificationJob:
    def __init__(self, settings: Settings) -> None:
        assert settings.hsm_ca_cert is not None  # `register` checked it
        self.dsn = settings.pg_dsn.get_secret_value()
        self.interval_s = settings.chain_verify_interval_s
        self.fail_fast = settings.chain_verify_fail_fast
        self.trust_anchors = load_trust_anchors(settings.hsm_ca_cert.read_bytes())

    async def run_if_due(self) -> VerificationRun | None:
        """The run, or None when none was due or another session was running one."""
        try:
            conn = await asyncpg.connect(self.dsn, timeout=10)
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError):
            RUNS.labels(result="error").inc()  # a run that could not start (one that started counts itself)
            raise
        try:
            request_id = new_request_id()
            try:
                run = await run_verification(conn, self.trust_anchors, request_id=request_id,
                                             only_if_due_s=self.interval_s)
            except VerificationBusy:
                log.info("verification skipped: another session is running one")
                return None
        finally:
            await conn.close()
        if run is not None and not run.ok:
            broken = sorted({r.operator_id for r in run.chains if not r.ok}
                            | {v.operator_id for v in run.checkpoints if not v.ok})
            log.critical("verification found breaks; " + ("exports of these operators are halted"
                                                         if self.fail_fast else "exports go on (fail-fast is off)"),
                         extra={"operator_ids": broken, "fail_fast": self.fail_fast, "request_id": request_id})
        return run


def register(app: faust.App, settings: Settings) -> None:
    if settings.hsm_ca_cert is None:
        log.warning("verification job not started: CDR_HSM_CA_CERT (the checkpoints' trust anchor) is not set")
        return
    job = VerificationJob(settings)

    @app.timer(check_period(settings.chain_verify_interval_s), name="chain_verify")
    async def verify_when_due() -> None:
        try:
            await job.run_if_due()
        except Exception:  # noqa: BLE001 - a failed run must not stop the timer; the next check retries
            log.exception("verification failed; retried at the next check")
