"""The main job on the local stack: stack up, then a worker, the bridge, the portal and a DLR generator.

Children run as separate processes (as in production), each with its own metrics endpoint,
all pointed at the stack by the CDR_* environment. Ctrl-C (or `--seconds`) stops them in
reverse order with SIGTERM, so each finishes its batch and leaves cleanly; the stack stays up
(`cdrmed stack down` stops it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from cdr_mediation.stack.manager import Stack
from cdr_mediation.stack.process import StackError, free_port, wait_until


def _spawn(name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cdr_mediation.cli", *args], env=env, start_new_session=True)


def _healthz(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


def run_dev_job(state_dir: Path, *, seconds: float | None, rate: float) -> int:
    stack = Stack(state_dir)
    try:
        status = stack.up()
    except StackError as exc:
        print(f"cdrmed dev: {exc}", file=sys.stderr)
        return 1
    ports = {name: free_port() for name in ("portal", "portal_probe", "worker_web", "worker_metrics", "portal_metrics",
                                            "generator_metrics", "bridge_metrics", "relay_metrics")}
    base_env = {**os.environ, **stack.settings_env()}
    children = {
        # Every agent, the exporter included: a day closes at its end (UTC) plus the grace,
        # and its file is then built, signed, delivered to the simulator and archived.
        "worker": _spawn("worker", ["worker"], {**base_env, "CDR_WORKER_AGENTS": "ingest,store,rollup,rollup-store,exporter",
                                                "CDR_WORKER_WEB_PORT": str(ports["worker_web"]),
                                                "CDR_METRICS_PORT": str(ports["worker_metrics"])}),
        "portal": _spawn("portal", ["portal"], {**base_env, "CDR_PORTAL_PORT": str(ports["portal"]),
                                                "CDR_PORTAL_PROBE_PORT": str(ports["portal_probe"]),
                                                "CDR_WORKER_URLS": f"http://127.0.0.1:{ports['worker_web']}",
                                                "CDR_METRICS_PORT": str(ports["portal_metrics"])}),
        "bridge": _spawn("bridge", ["bridge"], {**base_env, "CDR_METRICS_PORT": str(ports["bridge_metrics"])}),
        # Publishes the portal's adjustments (transactional outbox) to the adjustment topic.
        "relay": _spawn("relay", ["outbox", "relay"], {**base_env, "CDR_METRICS_PORT": str(ports["relay_metrics"])}),
        # A new seed per run: the same seed would republish the same dlr_ids with new times.
        "generator": _spawn("generator", ["generate", "--rate", str(rate), "--seed", str(time.time_ns())],
                            {**base_env, "CDR_METRICS_PORT": str(ports["generator_metrics"])}),
    }
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    exit_code = 0
    try:
        portal = f"https://127.0.0.1:{ports['portal']}"
        probes = f"http://127.0.0.1:{ports['portal_probe']}"
        wait_until(lambda: _healthz(f"{probes}/healthz"), timeout=60, what="portal /healthz")
        pki = stack.state.root / "portal-pki"
        print(json.dumps({
            "job": "running",
            "stack": {name: health.as_json() for name, health in status.items()},
            "portal": {"healthz": f"{probes}/healthz", "readyz": f"{probes}/readyz", "metrics": f"{probes}/metrics",
                       "api": portal,
                       "rollups": f"{portal}/v1/rollups?operator=<operator_id>&from=<ISO 8601>&to=<ISO 8601>",
                       "curl": f"curl --cacert {pki}/client-ca.pem --cert {pki}/client-regulator.pem "
                               f"--key {pki}/client-regulator.key '{portal}/v1/rollups?operator=op-alpha"
                               f"&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z'"},
            "metrics": {name: f"http://127.0.0.1:{ports[name + '_metrics']}/metrics"
                        for name in ("worker", "portal", "bridge", "generator", "relay")},
            "stop": "Ctrl-C (the stack stays up; `cdrmed stack down` stops it)",
        }), flush=True)
        deadline = None if seconds is None else time.monotonic() + seconds
        while not stopping.is_set() and (deadline is None or time.monotonic() < deadline):
            dead = {name: child.returncode for name, child in children.items() if child.poll() is not None}
            if dead:
                print(f"cdrmed dev: child process exited unexpectedly: {dead}", file=sys.stderr)
                exit_code = 1
                break
            stopping.wait(0.5)
    except StackError as exc:
        print(f"cdrmed dev: {exc}", file=sys.stderr)
        exit_code = 1
    finally:
        for name in ("generator", "bridge", "relay", "portal", "worker"):
            child = children[name]
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        for name, child in children.items():
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        print(json.dumps({"job": "stopped", "exit_codes": {n: c.returncode for n, c in children.items()}}), flush=True)
    return exit_code
