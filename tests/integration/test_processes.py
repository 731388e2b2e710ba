"""The processes an operator runs: start-up guards, start-up log, portal probes, metrics, main job."""

from __future__ import annotations

import json
import subprocess
import sys

import aiohttp
import pytest

from cdr_mediation.stack.process import free_port
from tests.integration.support.processes import eventually, spawn, stop

CDRMED = ["-m", "cdr_mediation.cli"]


def test_worker_refuses_to_start_with_ai_enabled_and_no_model_registry_entry(stack_env):
    result = subprocess.run([sys.executable, *CDRMED, "worker"], env={**stack_env, "AI_ENABLED": "true"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 3
    assert "AI_ENABLED is true but no model registry entry is configured" in result.stderr


def test_a_misspelt_flag_stops_any_process_with_exit_2(stack_env):
    result = subprocess.run([sys.executable, *CDRMED, "portal"], env={**stack_env, "CDR_EXPORT_ENABLE": "false"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "CDR_EXPORT_ENABLE" in result.stderr


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
            return response.status, await response.text()


@pytest.fixture
def portal(stack_env, tmp_path):
    started = []

    def start(**overrides: str):
        """(probe listener URL, metrics URL, log, process): the probes answer in clear; the API
        (mutual TLS) is test_portal_mtls.py's."""
        port, probe_port, metrics_port = free_port(), free_port(), free_port()
        log = tmp_path / f"portal-{port}.log"
        env = {**stack_env, "CDR_PORTAL_PORT": str(port), "CDR_PORTAL_PROBE_PORT": str(probe_port),
               "CDR_METRICS_PORT": str(metrics_port), **overrides}
        proc = spawn([*CDRMED, "portal"], env=env, log_path=log)
        started.append(proc)
        return f"http://127.0.0.1:{probe_port}", f"http://127.0.0.1:{metrics_port}", log, proc

    yield start
    for proc in started:
        stop(proc)


async def test_portal_is_live_ready_and_exports_metrics(portal, stack_env):
    base, metrics_base, log, proc = portal()
    await eventually(lambda: _get(f"{base}/healthz"), timeout=60, what="portal /healthz", log=log, alive=proc)
    status, body = await _get(f"{base}/readyz")
    assert status == 200, body
    assert json.loads(body) == {"ready": True, "checks": {name: {"ready": True} for name in ("kafka", "postgres", "hsm")}}
    status, text = await _get(f"{base}/metrics")
    assert status == 200 and 'cdr_portal_requests_total{route="/readyz",status="200"} 1.0' in text
    status, text = await _get(f"{metrics_base}/metrics")
    assert status == 200 and 'cdr_build_info{service="portal"' in text

    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    startup = [line for line in lines if line["message"] == "starting"]
    assert len(startup) == 1, "settings are logged exactly once at start-up"
    assert startup[0]["settings"]["hsm_pin"] == "***"
    for secret in ("CDR_HSM_PIN", "CDR_S3_SECRET_KEY", "CDR_MSISDN_HASH_KEY"):
        assert stack_env[secret] not in log.read_text()
    assert stack_env["CDR_PG_DSN"].split(":")[2].split("@")[0] not in log.read_text()  # the DB password


async def test_portal_readiness_reports_a_dependency_that_is_down(portal, stack_env):
    dead_port = free_port()
    base, _, log, proc = portal(CDR_PG_DSN=f"postgresql://cdr_app:x@127.0.0.1:{dead_port}/cdr")
    await eventually(lambda: _get(f"{base}/healthz"), timeout=60, what="portal /healthz", log=log, alive=proc)
    status, body = await _get(f"{base}/readyz")
    report = json.loads(body)
    assert status == 503 and report["ready"] is False
    assert report["checks"]["postgres"]["ready"] is False and report["checks"]["postgres"]["detail"]
    assert report["checks"]["kafka"] == {"ready": True}


@pytest.mark.slow
def test_main_job_runs_worker_portal_relay_and_generator_then_stops_cleanly(stack, stack_env):
    result = subprocess.run([sys.executable, *CDRMED, "dev", "--state-dir", str(stack.state.root), "--seconds", "20",
                             "--rate", "40"], env=stack_env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    events = [line for line in lines if "job" in line]
    assert [e["job"] for e in events] == ["running", "stopped"]
    assert all(component["healthy"] for component in events[0]["stack"].values())
    assert events[1]["exit_codes"] == {"worker": 0, "portal": 0, "bridge": 0, "relay": 0, "generator": 0}
    published = [line for line in lines if "published" in line]
    assert published and published[0]["published"] > 100
