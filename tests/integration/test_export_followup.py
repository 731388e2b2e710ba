"""Following delivered exports up on the real stack: the regulator simulator ACKs one operator's
file, rejects another's with a RAP (reasons stored; a corrected file reissued under the same name
is then ACKed), and stays silent on a third's (time-outs, redeliveries, MANUAL at the deadline
with the alert gauge, then resumed by a person and ACKed late)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from cdr_mediation.codecs.rap import decode_rap
from cdr_mediation.domain.synthetic import synthetic_dlrs
from cdr_mediation.stack.pipeline import LocalPipeline, export_config_document
from cdr_mediation.stack.process import free_port
from tests.integration.support.observe import expected_cdr_ids, query_rows, wait_stored
from tests.integration.support.processes import eventually

DAY = dt.datetime(2026, 10, 21, tzinfo=dt.timezone.utc)
AGENTS = "ingest,store,rollup,rollup-store,exporter"
DEADLINE_S = 55  # the rejected → reissued → ACKED path finishes well before it (~30 s)


@pytest.fixture(scope="module")
def regulator(stack) -> dict:
    return stack.state.read_manifest()["regulator"]


async def _control(regulator: dict, method: str, path: str, body: dict | None = None) -> dict:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"{regulator['control_url']}{path}", json=body) as response:
            assert response.status < 300, await response.text()
            return await response.json()


async def _steps(run: LocalPipeline, operator_id: str) -> list[tuple[str, str, dict]]:
    rows = await query_rows(run, "SELECT event, to_state, detail, actor FROM export_transition WHERE operator_id = $1 "
                             "AND day = $2 ORDER BY step", operator_id, DAY.date())
    return [(r["event"], r["to_state"], {**json.loads(r["detail"]), "_actor": r["actor"]}) for r in rows]


async def _state(run: LocalPipeline, operator_id: str, wanted: str):
    steps = await _steps(run, operator_id)
    return steps if steps and steps[-1][1] == wanted else None


def _cdrmed(run: LocalPipeline, *args: str, **env: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "cdr_mediation.cli", *args], env={**os.environ, **run.env, **env},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


async def _metric(url: str, line_prefix: str) -> float | None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/metrics") as response:
            text = await response.text()
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(line_prefix)]
    return values[0] if values else None


@pytest.mark.slow
async def test_acked_rejected_and_reissued_silent_then_manual_and_resumed(stack_env, stack, regulator, tmp_path):
    run = LocalPipeline(stack_env, tmp_path, operators=3, partitions=2)
    acked, rejected, silent = run.operators
    senders = {op: cfg["sender"] for op, cfg in export_config_document(run.operators, run.namespace)["operators"].items()}
    name = {op: f"TD{senders[op]}ATRAA00001" for op in run.operators}
    await _control(regulator, "POST", "/control/answers",
                   {"file": f"{name[rejected]}.zip", "answer": "reject", "errors": [34, 100], "file_sequence_number": 1})
    await _control(regulator, "POST", "/control/answers", {"file": f"{name[silent]}.zip", "answer": "none"})
    metrics_port = free_port()
    try:
        run.start("bridge", "bridge")
        worker = run.start("worker", "worker", CDR_WORKER_AGENTS=AGENTS, CDR_EXPORT_POLL_INTERVAL_S="0.5",
                           CDR_EXPORT_ACK_TIMEOUT_S="3", CDR_EXPORT_DEADLINE_S=str(DEADLINE_S),
                           CDR_EXPORT_RETRY_BASE_S="0.5", CDR_METRICS_PORT=str(metrics_port))
        traffic = list(synthetic_dlrs(seed=11, start=DAY + dt.timedelta(hours=8), count=450, operators=run.operators,
                                      spacing_ms=90_000, id_prefix=f"{run.namespace}-fu"))
        documents = [json.dumps(d).encode() for d in traffic]
        await run.publish(documents, msg_ids=[d["dlr_id"] for d in traffic])
        await wait_stored(run, len(expected_cdr_ids(run, documents)), timeout=240, what="CDRs of the day")
        _cdrmed(run, "clock", "tick", "--at", (DAY + dt.timedelta(days=1, hours=2, minutes=1)).isoformat(),
                "--allow-future", *[arg for op in run.operators for arg in ("--operator", op)])
        log = run.log_path("worker")

        # ACK: recorded with the regulator's document, which acknowledges the delivered bytes.
        steps = await eventually(lambda: _state(run, acked, "ACKED"), timeout=240, what="ACKED", log=log, alive=worker)
        assert [event for event, _, _ in steps] == ["built", "signed", "delivered", "acked"]
        delivered, answer = steps[2][2], steps[3][2]["answer"]
        ack_bytes = base64.b64decode(answer["data_base64"])
        assert ack_bytes == (Path(regulator["outbox"]) / f"{name[acked]}.zip.ack").read_bytes()
        assert json.loads(ack_bytes)["sha256"] == delivered["sha256"] == answer["acknowledged_sha256"]
        assert answer["sha256"] == hashlib.sha256(ack_bytes).hexdigest()

        # RAP: REJECTED with the decoded reasons and the RAP's own bytes.
        steps = await eventually(lambda: _state(run, rejected, "REJECTED"), timeout=120, what="REJECTED", log=log)
        answer = steps[-1][2]["answer"]
        assert answer["reasons"]["returns"] == [{"kind": "FatalReturn", "file_sequence_number": 1,
                                                 "error_codes": [34, 100],
                                                 "operator_spec": [f"file={name[rejected]}.zip",
                                                                   f"sha256={steps[2][2]['sha256']}"]}]
        assert decode_rap(base64.b64decode(answer["data_base64"])).returns[0].file_sequence_number == 1

        # The corrected file: the configuration is fixed (here: the operator's UTC offset), a
        # person reissues it, and the regulator now accepts it under the same name.
        fixed = export_config_document(run.operators, run.namespace)
        fixed["operators"][rejected]["time_zone"] = "+0430"
        fixed_path = run.work_dir / "export-config-fixed.json"
        fixed_path.write_text(json.dumps(fixed))
        await _control(regulator, "POST", "/control/answers", {"file": f"{name[rejected]}.zip", "answer": "ack"})
        reissued = json.loads(_cdrmed(run, "export", "reissue", "--operator", rejected, "--day", DAY.date().isoformat(),
                                      "--actor", "ops.alice", "--ticket", "INC-42",
                                      CDR_EXPORT_CONFIG_FILE=str(fixed_path),
                                      CDR_DATA_DIR=str(run.work_dir / "worker-data")).stdout)
        assert reissued["same_bytes"] is False and reissued["file_name"] == name[rejected]
        steps = await eventually(lambda: _state(run, rejected, "ACKED"), timeout=120, what="corrected file ACKED",
                                 log=log, alive=worker)
        assert [event for event, _, _ in steps] == ["built", "signed", "delivered", "rejected", "rebuilt", "signed",
                                                    "delivered", "acked"]
        rebuilt = steps[4][2]
        assert (rebuilt["_actor"], rebuilt["ticket"], rebuilt["zip_sha256"]) == ("ops.alice", "INC-42",
                                                                                reissued["zip_sha256"])
        assert steps[6][2]["sha256"] == reissued["zip_sha256"] != steps[2][2]["sha256"]
        assert (Path(regulator["inbox"]) / f"{name[rejected]}.zip").read_bytes() == (
            run.work_dir / "worker-data" / "exports" / rejected / f"{name[rejected]}.zip").read_bytes()

        # Silence: time-outs and redeliveries of the same bytes until the deadline, then MANUAL.
        steps = await eventually(lambda: _state(run, silent, "MANUAL"), timeout=DEADLINE_S + 120,
                                 what="MANUAL at the deadline", log=log, alive=worker)
        events = [event for event, _, _ in steps]
        assert events[:4] == ["built", "signed", "delivered", "timed_out"] and events[-1] == "deadline_passed"
        assert events.count("redelivered") >= 1 and "acked" not in events
        redelivered = next(detail for event, _, detail in steps if event == "redelivered")
        assert redelivered["outcome"] == "already_delivered" and redelivered["sha256"] == steps[2][2]["sha256"]
        receipts = await _control(regulator, "GET", f"/control/receipts?file={name[silent]}.zip")
        assert len(receipts["receipts"]) == 1  # one file at the regulator, however often it was handed over
        gauge = await eventually(
            lambda: _metric(f"http://127.0.0.1:{metrics_port}", 'cdr_exports{state="MANUAL"}'), timeout=30,
            what="the MANUAL gauge")
        assert gauge >= 1

        # A person resumes it after talking to the regulator, who then answers late.
        _cdrmed(run, "export", "resume", "--operator", silent, "--day", DAY.date().isoformat(),
                "--actor", "ops.bob", "--ticket", "INC-43")
        await _control(regulator, "POST", "/control/answers",
                       {"file": f"{name[silent]}.zip", "answer": "ack", "apply_to_received": True})
        steps = await eventually(lambda: _state(run, silent, "ACKED"), timeout=120, what="resumed file ACKED", log=log)
        resumed_at = [event for event, _, _ in steps].index("resumed")
        assert steps[resumed_at][2]["_actor"] == "ops.bob"
        assert steps[resumed_at + 1][2]["zip_sha256"] == steps[0][2]["zip_sha256"]  # the same file, built again
        status = [json.loads(line) for line in _cdrmed(run, "export", "status", "--operator", silent).stdout.splitlines()]
        assert [(s["file_name"], s["state"]) for s in status] == [(name[silent], "ACKED")]
    finally:
        run.stop_all()
        await _control(regulator, "DELETE", "/control/answers")
