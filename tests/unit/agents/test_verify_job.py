"""The daily verification job's wiring (agents/verify_job.py): how often a worker checks whether a
run is due, and that a worker without the checkpoints' trust anchor does not start it (the run
itself, on the real database: tests/integration/test_verifier.py)."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cdr_mediation.agents.verify_job import check_period, register
from cdr_mediation.settings import Settings
from cdr_mediation.stack.hsm import dev_root_ca


class TimerRecorder:
    """Stands in for the Faust app: records the timers registered on it."""

    def __init__(self) -> None:
        self.timers: list[tuple[float, str]] = []

    def timer(self, interval: float, *, name: str):
        def decorate(function):
            self.timers.append((interval, name))
            return function
        return decorate


def test_a_due_run_starts_at_most_five_minutes_late():
    assert check_period(86400) == 300 and check_period(60) == 60


def test_the_job_checks_on_a_timer_when_the_trust_anchor_is_set(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_bytes(dev_root_ca(ec.generate_private_key(ec.SECP256R1())).public_bytes(serialization.Encoding.PEM))
    app = TimerRecorder()
    register(app, Settings.load({"CDR_HSM_CA_CERT": str(ca), "CDR_CHAIN_VERIFY_INTERVAL_S": "120"}))
    assert app.timers == [(120, "chain_verify")]


def test_without_a_trust_anchor_the_job_is_not_started():
    app = TimerRecorder()
    register(app, Settings.load({}))
    assert app.timers == []
