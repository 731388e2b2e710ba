"""Inclusion proofs on the real stack: DLRs → CDRs → a closed day exported, HSM-signed and delivered
by the exporter → the portal (`cdrmed portal`) serves `GET /v1/cdrs/{cdr_id}/proof` → the
standalone verifier accepts it against the stack's CA, and rejects a tampered copy.

Before the day closes and for an entry that arrived after it closed the portal answers 409; an
unknown id 404, a malformed one 400."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import ssl
import subprocess
import sys
import zipfile
from pathlib import Path

import aiohttp
import pytest

from cdr_mediation.domain.synthetic import synthetic_dlrs
from cdr_mediation.stack.pipeline import LocalPipeline
from cdr_mediation.stack.process import free_port
from tests.integration.support.observe import expected_cdr_ids, query_rows, wait_stored
from tests.integration.support.portal import portal_tls
from tests.integration.support.processes import eventually, spawn, stop

DAY = dt.datetime(2026, 10, 24, tzinfo=dt.timezone.utc)
DLRS = 300
AGENTS = "ingest,store,rollup,rollup-store,exporter"
REPO = Path(__file__).resolve().parents[2]
VERIFIER = REPO / "tools" / "verify_proof.py"


async def _delivered(run: LocalPipeline):
    rows = await query_rows(run, "SELECT f.operator_id, f.file_name, (SELECT to_state FROM export_transition t WHERE "
                             "t.operator_id = f.operator_id AND t.day = f.day ORDER BY step DESC LIMIT 1) AS state "
                             "FROM export_file f WHERE f.operator_id LIKE $1 AND f.day = $2",
                        f"{run.namespace}-%", DAY.date())
    done = len(rows) == len(run.operators) and all(r["state"] in ("DELIVERED", "ACKED") for r in rows)
    return {r["operator_id"]: r["file_name"] for r in rows} if done else None


async def _get(url: str, tls: ssl.SSLContext | bool = True) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, ssl=tls, timeout=aiohttp.ClientTimeout(total=60)) as response:
            return response.status, await response.text()


def _verify(path: Path, ca: str) -> tuple[int, dict, str]:
    result = subprocess.run([sys.executable, "-I", str(VERIFIER), str(path), "--ca", ca], capture_output=True,
                            text=True, timeout=60)
    return result.returncode, json.loads(result.stdout), result.stderr


def _tick(run: LocalPipeline) -> None:
    at = (DAY + dt.timedelta(days=1, hours=2, minutes=1)).isoformat()
    result = subprocess.run([sys.executable, "-m", "cdr_mediation.cli", "clock", "tick", "--at", at, "--allow-future",
                             *[arg for op in run.operators for arg in ("--operator", op)]],
                            env={**os.environ, **run.env}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


async def _publish(run: LocalPipeline, traffic: list[dict]) -> int:
    documents = [json.dumps(d).encode() for d in traffic]
    await run.publish(documents, msg_ids=[d["dlr_id"] for d in traffic])
    return len(expected_cdr_ids(run, documents))


@pytest.mark.slow
async def test_the_portal_serves_proofs_that_the_standalone_verifier_accepts(stack_env, stack, tmp_path):
    run = LocalPipeline(stack_env, tmp_path, operators=2, partitions=2)
    portal = None
    try:
        run.start("bridge", "bridge")
        worker = run.start("worker", "worker", CDR_WORKER_AGENTS=AGENTS, CDR_EXPORT_POLL_INTERVAL_S="0.5",
                           CDR_DELIVERY_METHOD="sftp")
        port, probe_port = free_port(), free_port()
        portal_log = tmp_path / "portal.log"
        portal = spawn(["-m", "cdr_mediation.cli", "portal"], log_path=portal_log,
                       env={**run.env, "CDR_PORTAL_PORT": str(port), "CDR_PORTAL_PROBE_PORT": str(probe_port),
                            "CDR_METRICS_PORT": str(free_port())})
        base = f"https://127.0.0.1:{port}"
        regulator = portal_tls(stack_env, "regulator")  # the regulator asks for the proofs
        await eventually(lambda: _get(f"http://127.0.0.1:{probe_port}/healthz"), timeout=60, what="portal /healthz", log=portal_log,
                         alive=portal)

        traffic = list(synthetic_dlrs(seed=11, start=DAY + dt.timedelta(hours=8), count=DLRS, operators=run.operators,
                                      spacing_ms=72_000, id_prefix=f"{run.namespace}-proof"))
        stored = await _publish(run, traffic)
        await wait_stored(run, stored, timeout=240, what="CDRs of the day")
        rows = await query_rows(run, "SELECT cdr_id, operator_id, chain_seq, msisdn FROM cdr WHERE operator_id LIKE $1 "
                                 "ORDER BY operator_id, chain_seq", f"{run.namespace}-%")
        status, body = await _get(f"{base}/v1/cdrs/{rows[0]['cdr_id']}/proof", regulator)
        assert status == 409 and json.loads(body)["error"]["code"] == "day_not_exported", body

        _tick(run)
        files = await eventually(lambda: _delivered(run), timeout=300, what="both exports DELIVERED",
                                 log=run.log_path("worker"), alive=worker)

        ca = run.env["CDR_HSM_CA_CERT"]
        by_operator = {op: [r for r in rows if r["operator_id"] == op] for op in run.operators}
        chosen = [*[by_operator[run.operators[0]][i] for i in (0, len(by_operator[run.operators[0]]) // 2, -1)],
                  by_operator[run.operators[1]][-1]]
        for row in chosen:
            status, body = await _get(f"{base}/v1/cdrs/{row['cdr_id']}/proof", regulator)
            assert status == 200, body
            proof = json.loads(body)
            path = tmp_path / f"{row['cdr_id']}.proof.json"
            path.write_text(body, encoding="utf-8")
            code, verdict, stderr = _verify(path, ca)
            assert code == 0, stderr
            operator_id = row["operator_id"]
            assert (verdict["cdr_id"], verdict["operator_id"], verdict["file_name"], verdict["chain_seq"]) == (
                row["cdr_id"], operator_id, files[operator_id], row["chain_seq"])
            assert verdict["tree_size"] == len(by_operator[operator_id])  # every CDR of the day is in its file
            assert verdict["trust_anchor"] is not None and verdict["signature_algorithm"] == "ed25519"

            # The proof's checkpoint and signature are the ones that went out with the file.
            folder = run.work_dir / "worker-data" / "exports" / operator_id
            zip_path = folder / f"{files[operator_id]}.zip"
            with zipfile.ZipFile(zip_path) as archive:
                assert archive.read("checkpoint.json") == base64.b64decode(proof["checkpoint"])
            assert (folder / f"{files[operator_id]}.checkpoint.sig").read_bytes() == base64.b64decode(
                proof["checkpoint_signature"])

        # A tampered copy: one amount changed in the entry; then the leaf moved.
        tampered = json.loads(body)
        tampered["entry"]["amount_minor"] += 1
        (tmp_path / "tampered.json").write_text(json.dumps(tampered))
        code, verdict, stderr = _verify(tmp_path / "tampered.json", ca)
        assert (code, verdict["valid"], verdict["failed_check"]) == (1, False, "record_hash"), stderr
        moved = {**json.loads(body), "leaf_index": json.loads(body)["leaf_index"] - 1}
        (tmp_path / "moved.json").write_text(json.dumps(moved))
        code, verdict, _ = _verify(tmp_path / "moved.json", ca)
        assert (code, verdict["failed_check"]) == (1, "inclusion")

        # A receipt of the closed day that arrives late is a later chain entry, not in this file.
        late = list(synthetic_dlrs(seed=12, start=DAY + dt.timedelta(hours=21), count=1,
                                   operators=run.operators[:1], id_prefix=f"{run.namespace}-late"))
        await _publish(run, late)
        await wait_stored(run, stored + 1, timeout=120, what="the late CDR")
        (late_row,) = await query_rows(run, "SELECT cdr_id FROM cdr WHERE dlr_id = $1", late[0]["dlr_id"])
        status, body = await _get(f"{base}/v1/cdrs/{late_row['cdr_id']}/proof", regulator)
        assert status == 409 and json.loads(body)["error"]["code"] == "after_day_close", body

        status, body = await _get(f"{base}/v1/cdrs/00000000-0000-5000-8000-000000000000/proof", regulator)
        assert status == 404 and json.loads(body)["error"]["code"] == "unknown_cdr"
        status, body = await _get(f"{base}/v1/cdrs/NOT-AN-ID/proof", regulator)
        assert status == 400 and json.loads(body)["error"]["code"] == "bad_request"

        log = portal_log.read_text()
        served = [json.loads(line) for line in log.splitlines() if line.startswith("{")
                  and json.loads(line).get("message") == "proof served"]
        assert len(served) == len(chosen) and all(s["tree_size"] > 0 for s in served)
        for row in rows:
            assert row["msisdn"] not in log  # the entry is served, never logged
    finally:
        if portal is not None:
            stop(portal)
        run.stop_all()
