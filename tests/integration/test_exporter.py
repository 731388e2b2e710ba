"""The exporter agent on the real stack: DLRs → CDRs → a closed day → a built, HSM-signed export
that verifies against the stack's CA, delivered to the regulator simulator over SFTP or HTTPS;
with exports disabled nothing is built, and the closed day waits in Kafka until they are enabled."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from cdr_mediation.agents.export_build import CHECKPOINT_MEMBER
from cdr_mediation.domain.checkpoint import Checkpoint
from cdr_mediation.domain.synthetic import synthetic_dlrs
from cdr_mediation.infra.cms_verify import load_trust_anchors, public_key_id, verify_checkpoint, verify_detached
from cdr_mediation.stack.pipeline import LocalPipeline
from tests.integration.support.observe import expected_cdr_ids, wait_stored
from tests.integration.support.processes import eventually

DAY = dt.datetime(2026, 10, 20, tzinfo=dt.timezone.utc)
DLRS = 600
AGENTS = "ingest,store,rollup,rollup-store,exporter"


@pytest.fixture(scope="module")
def regulator(stack) -> dict:
    """What `stack up` recorded for the simulator: control URL and drop-box paths."""
    return stack.state.read_manifest()["regulator"]


async def _exports(run: LocalPipeline) -> dict[str, str]:
    """Operator → current export state of DAY (absent: no export recorded)."""
    conn = await asyncpg.connect(run.env["CDR_PG_DSN"])
    try:
        rows = await conn.fetch(
            "SELECT f.operator_id, coalesce((SELECT to_state FROM export_transition t WHERE t.operator_id = f.operator_id "
            "AND t.day = f.day ORDER BY step DESC LIMIT 1), 'PENDING') AS state FROM export_file f "
            "WHERE f.operator_id LIKE $1 AND f.day = $2", f"{run.namespace}-%", DAY.date())
    finally:
        await conn.close()
    return {r["operator_id"]: r["state"] for r in rows}


async def _in_states(run: LocalPipeline, wanted: set[str]) -> dict[str, str] | None:
    """Operator → state once every operator's export of DAY is in one of `wanted`, else None."""
    states = await _exports(run)
    return states if len(states) == len(run.operators) and set(states.values()) <= wanted else None


async def _steps(run: LocalPipeline, operator_id: str) -> list[tuple[str, dict]]:
    """(event, detail) of every recorded step of the operator's export of DAY, in order."""
    conn = await asyncpg.connect(run.env["CDR_PG_DSN"])
    try:
        rows = await conn.fetch("SELECT event, detail FROM export_transition WHERE operator_id = $1 AND day = $2 "
                                "ORDER BY step", operator_id, DAY.date())
    finally:
        await conn.close()
    return [(r["event"], json.loads(r["detail"])) for r in rows]


async def _receipts(regulator: dict, file_name: str) -> list[dict]:
    async with aiohttp.ClientSession() as session:
        url = f"{regulator['control_url']}/control/receipts"
        async with session.get(url, params={"file": file_name}) as response:
            return (await response.json())["receipts"]


async def _day_cdrs(run: LocalPipeline, operator_id: str) -> int:
    conn = await asyncpg.connect(run.env["CDR_PG_DSN"])
    try:
        return await conn.fetchval("SELECT count(*) FROM cdr WHERE operator_id = $1 AND done_at >= $2 AND done_at < $3",
                                   operator_id, DAY, DAY + dt.timedelta(days=1))
    finally:
        await conn.close()


def _tick(run: LocalPipeline) -> None:
    at = (DAY + dt.timedelta(days=1, hours=2, minutes=1)).isoformat()
    result = subprocess.run([sys.executable, "-m", "cdr_mediation.cli", "clock", "tick", "--at", at, "--allow-future",
                             *[arg for op in run.operators for arg in ("--operator", op)]],
                            env={**os.environ, **run.env}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


async def _day_of_traffic(run: LocalPipeline) -> None:
    # Event times spread over the day (08:00 to ~20:00), so the day closes only with the tick.
    traffic = list(synthetic_dlrs(seed=7, start=DAY + dt.timedelta(hours=8), count=DLRS, operators=run.operators,
                                  spacing_ms=72_000, id_prefix=f"{run.namespace}-exp"))
    documents = [json.dumps(d).encode() for d in traffic]
    await run.publish(documents, msg_ids=[d["dlr_id"] for d in traffic])
    await wait_stored(run, len(expected_cdr_ids(run, documents)), timeout=240, what="CDRs of the day")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sftp", "https"])
async def test_a_closed_day_is_signed_verifiably_and_delivered_with_its_signature(stack_env, stack, regulator,
                                                                                   tmp_path, method):
    run = LocalPipeline(stack_env, tmp_path, operators=2, partitions=2)
    try:
        run.start("bridge", "bridge")
        worker = run.start("worker", "worker", CDR_WORKER_AGENTS=AGENTS, CDR_DELIVERY_METHOD=method)
        await _day_of_traffic(run)
        _tick(run)
        # The follow-up may already have recorded the regulator's ACK (test_export_followup.py).
        await eventually(lambda: _in_states(run, {"DELIVERED", "ACKED"}), timeout=300,
                         what=f"both exports DELIVERED over {method}", log=run.log_path("worker"), alive=worker)

        inbox = Path(regulator["inbox"])
        anchors = load_trust_anchors(Path(run.env["CDR_HSM_CA_CERT"]).read_bytes())
        for operator_id in run.operators:
            folder = run.work_dir / "worker-data" / "exports" / operator_id
            (zip_path,) = folder.glob("*.zip")
            assert zip_path.name.startswith("TD")  # the run's configuration marks test data
            content, cms = zip_path.read_bytes(), zip_path.with_name(zip_path.name + ".p7s").read_bytes()

            # Signed in the HSM: the CMS verifies against the stack's CA, dated at the cut-off
            # (not the clock); the checkpoint counts the day's CDRs and its own signature verifies.
            verified = verify_detached(cms, content, anchors)
            assert verified.signing_time == DAY + dt.timedelta(days=1)
            with zipfile.ZipFile(zip_path) as archive:
                checkpoint_bytes = archive.read(CHECKPOINT_MEMBER)
            checkpoint = Checkpoint.from_dict(json.loads(checkpoint_bytes))
            assert checkpoint.record_count == await _day_cdrs(run, operator_id) > 0
            assert checkpoint.file_sequence == 1
            signature = zip_path.with_name(zip_path.name.removesuffix(".zip") + ".checkpoint.sig").read_bytes()
            verify_checkpoint(checkpoint_bytes, signature, public_key_id(verified.signer), verified.signer)

            zip_sha256, cms_sha256 = hashlib.sha256(content).hexdigest(), hashlib.sha256(cms).hexdigest()
            recorded = await _steps(run, operator_id)
            assert [event for event, _ in recorded][:3] == ["built", "signed", "delivered"]
            steps = dict(recorded)
            assert steps["built"]["zip_sha256"] == zip_sha256 and steps["signed"]["cms_sha256"] == cms_sha256
            delivered = steps["delivered"]
            assert (delivered["channel"], delivered["remote_name"], delivered["sha256"], delivered["size"],
                    delivered["outcome"]) == (method, zip_path.name, zip_sha256, len(content), "stored")
            assert (delivered["signature"]["remote_name"], delivered["signature"]["sha256"]) == (
                f"{zip_path.name}.p7s", cms_sha256)

            # The regulator's own ledger: one receipt per file, of the bytes that were built and signed.
            (receipt,) = await eventually(lambda: _receipts(regulator, zip_path.name), timeout=30,
                                          what=f"the regulator's receipt of {zip_path.name}")
            assert (receipt["sha256"], receipt["size"], receipt["channel"]) == (zip_sha256, len(content), method)
            (signature_receipt,) = await eventually(lambda: _receipts(regulator, f"{zip_path.name}.p7s"), timeout=30,
                                                    what=f"the regulator's receipt of {zip_path.name}.p7s")
            assert signature_receipt["sha256"] == cms_sha256
            assert (inbox / zip_path.name).read_bytes() == content
            assert not (inbox / (zip_path.name.removesuffix(".zip") + ".checkpoint.sig")).exists()  # stays with us
    finally:
        run.stop_all()


@pytest.mark.slow
async def test_with_exports_disabled_nothing_is_built_and_the_day_waits_in_kafka(stack_env, stack, tmp_path):
    run = LocalPipeline(stack_env, tmp_path, operators=2, partitions=2)
    try:
        run.start("bridge", "bridge")
        run.start("worker", "worker", CDR_WORKER_AGENTS=AGENTS, CDR_EXPORT_ENABLED="false")
        await _day_of_traffic(run)
        _tick(run)

        async def day_closed_stored():  # the rollup store has the day's last hour: the day closed
            conn = await asyncpg.connect(run.env["CDR_PG_DSN"])
            try:
                return await conn.fetchval(
                    "SELECT count(*) FROM rollup_closed WHERE operator_id LIKE $1 AND hour_start = $2",
                    f"{run.namespace}-%", DAY + dt.timedelta(hours=23)) == len(run.operators)
            finally:
                await conn.close()

        await eventually(day_closed_stored, timeout=120, what="the day closed")
        assert "exporter not started: CDR_EXPORT_ENABLED=false" in run.log_path("worker").read_text()
        assert await _exports(run) == {}
        assert not (run.work_dir / "worker-data" / "exports").exists()

        # Enabled again: the closed days waiting in Kafka are exported.
        run.kill("worker", sig=15)
        run.start("worker", "worker", CDR_WORKER_AGENTS=AGENTS)
        await eventually(lambda: _in_states(run, {"DELIVERED", "ACKED"}), timeout=240, what="exports after enabling")
    finally:
        run.stop_all()
