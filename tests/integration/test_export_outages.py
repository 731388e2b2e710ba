"""The exporter under outages, on the real stack: the HSM's library unreachable → the export waits
in BUILT, signing is retried and counted, and it completes once the library is back; the SFTP
drop box unreachable → the export waits in SIGNED, delivery is retried and counted, and it is
delivered once the server is reachable. Nothing is skipped, nothing is sent twice."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from cdr_mediation.domain.synthetic import synthetic_dlrs
from cdr_mediation.stack.pipeline import LocalPipeline
from cdr_mediation.stack.process import free_port
from tests.integration.support.observe import expected_cdr_ids, wait_stored
from tests.integration.support.outage import SwitchableEndpoint
from tests.integration.support.processes import eventually

DAY = dt.datetime(2026, 10, 23, tzinfo=dt.timezone.utc)
AGENTS = "ingest,store,rollup,rollup-store,exporter"


async def _events(run: LocalPipeline) -> list[str] | None:
    conn = await asyncpg.connect(run.env["CDR_PG_DSN"])
    try:
        rows = await conn.fetch("SELECT event FROM export_transition WHERE operator_id = $1 AND day = $2 ORDER BY step",
                                run.operators[0], DAY.date())
    finally:
        await conn.close()
    return [r["event"] for r in rows]


async def _metric(port: int, name: str) -> float:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


async def _closed_day(run: LocalPipeline) -> None:
    traffic = list(synthetic_dlrs(seed=31, start=DAY + dt.timedelta(hours=9), count=120, operators=run.operators,
                                  spacing_ms=300_000, id_prefix=f"{run.namespace}-out"))
    documents = [json.dumps(d).encode() for d in traffic]
    await run.publish(documents, msg_ids=[d["dlr_id"] for d in traffic])
    await wait_stored(run, len(expected_cdr_ids(run, documents)), timeout=240)
    tick = subprocess.run([sys.executable, "-m", "cdr_mediation.cli", "clock", "tick", "--at",
                           (DAY + dt.timedelta(days=1, hours=2, minutes=1)).isoformat(), "--allow-future",
                           "--operator", run.operators[0]],
                          env={**os.environ, **run.env}, capture_output=True, text=True, timeout=120)
    assert tick.returncode == 0, tick.stderr


@pytest.mark.slow
async def test_hsm_unreachable_the_export_waits_in_built_and_completes_when_it_returns(stack_env, stack, tmp_path):
    # The PKCS#11 library is reached through a link that is missing at first ("library path
    # broken"); putting it back is the HSM returning, without restarting anything.
    module_link = tmp_path / "hsm" / "libpkcs11.so"
    module_link.parent.mkdir()
    run = LocalPipeline(stack_env, tmp_path, operators=1, partitions=1)
    metrics_port = free_port()
    try:
        run.start("bridge", "bridge")
        worker = run.start("worker", "worker", CDR_WORKER_AGENTS=AGENTS, CDR_HSM_MODULE=str(module_link),
                           CDR_EXPORT_RETRY_BASE_S="0.5", CDR_EXPORT_POLL_INTERVAL_S="0.5",
                           CDR_METRICS_PORT=str(metrics_port))
        await _closed_day(run)
        log = run.log_path("worker")
        await eventually(lambda: _retried(metrics_port, "cdr_export_hsm_failures_total"), timeout=240, what="signing retried while the HSM is unreachable", log=log, alive=worker)
        assert await _events(run) == ["built"]  # waiting in BUILT: nothing signed, nothing sent

        module_link.symlink_to(stack_env["CDR_HSM_MODULE"])
        events = await eventually(lambda: _reached(run, "delivered"), timeout=120, what="signed and delivered",
                                  log=log, alive=worker)
        assert events[:3] == ["built", "signed", "delivered"]
    finally:
        run.stop_all()


@pytest.mark.slow
async def test_sftp_unreachable_the_export_waits_in_signed_and_is_delivered_when_it_returns(
        stack_env, stack, tmp_path):
    sftp = stack.state.read_manifest()["sftp"]
    endpoint = SwitchableEndpoint(int(sftp["port"]))
    host_key = Path(stack_env["CDR_SFTP_KNOWN_HOSTS"]).read_text().split(" ", 1)[1]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{endpoint.port} {host_key}")
    run = LocalPipeline(stack_env, tmp_path, operators=1, partitions=1)
    metrics_port = free_port()
    try:
        run.start("bridge", "bridge")
        worker = run.start("worker", "worker", CDR_WORKER_AGENTS=AGENTS, CDR_DELIVERY_METHOD="sftp",
                           CDR_SFTP_PORT=str(endpoint.port), CDR_SFTP_KNOWN_HOSTS=str(known_hosts),
                           CDR_EXPORT_RETRY_BASE_S="0.5", CDR_EXPORT_POLL_INTERVAL_S="0.5",
                           CDR_METRICS_PORT=str(metrics_port))
        await _closed_day(run)
        log = run.log_path("worker")
        await eventually(lambda: _retried(metrics_port, 'cdr_export_delivery_failures_total{channel="sftp",'
                                                        'kind="unavailable"}'),
                         timeout=240, what="delivery retried while SFTP is unreachable", log=log, alive=worker)
        assert await _events(run) == ["built", "signed"]  # waiting in SIGNED

        await endpoint.up()
        events = await eventually(lambda: _reached(run, "delivered"), timeout=120, what="delivered", log=log,
                                  alive=worker)
        assert events[:3] == ["built", "signed", "delivered"] and "delivery_refused" not in events
    finally:
        run.stop_all()
        await endpoint.close()


async def _retried(metrics_port: int, name: str) -> bool:
    return await _metric(metrics_port, name) >= 2


async def _reached(run: LocalPipeline, event: str) -> list[str] | None:
    events = await _events(run)
    return events if event in events else None
