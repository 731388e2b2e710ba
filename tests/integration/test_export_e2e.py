"""End to end on the real stack: 10,000 DLRs → CDRs → closed day → export built, HSM-signed,
delivered over SFTP → the regulator's ACK recorded → every object archived in S3 under
COMPLIANCE retention (while S3 was unreachable at first: archived once it came back) →
`cdrmed export rebuild` reproduces the archived bytes exactly."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys

import boto3
import pytest

from cdr_mediation.domain.export_config import day_cut_off
from cdr_mediation.domain.retention import retain_until
from cdr_mediation.domain.synthetic import synthetic_dlrs
from cdr_mediation.stack.pipeline import LocalPipeline
from tests.integration.support.outage import SwitchableEndpoint
from tests.integration.support.observe import expected_cdr_ids, query_rows, wait_stored
from tests.integration.support.processes import eventually

DAY = dt.datetime(2026, 10, 22, tzinfo=dt.timezone.utc)
AGENTS = "ingest,store,rollup,rollup-store,exporter"
DLRS = 10_000


async def _acked(run: LocalPipeline):
    rows = await query_rows(run, "SELECT f.operator_id, (SELECT to_state FROM export_transition t WHERE t.operator_id = "
                            "f.operator_id AND t.day = f.day ORDER BY step DESC LIMIT 1) AS state FROM export_file f "
                            "WHERE f.operator_id LIKE $1 AND f.day = $2", f"{run.namespace}-%", DAY.date())
    return rows if len(rows) == len(run.operators) and all(r["state"] == "ACKED" for r in rows) else None


async def _archived(run: LocalPipeline):
    rows = await query_rows(run, "SELECT * FROM export_archive WHERE operator_id LIKE $1 AND day = $2 ORDER BY object_key",
                       f"{run.namespace}-%", DAY.date())
    return rows if len(rows) == 5 * len(run.operators) else None


@pytest.mark.slow
async def test_ten_thousand_dlrs_to_an_acknowledged_archived_export_that_rebuilds_identically(
        stack_env, stack, tmp_path):
    s3 = SwitchableEndpoint(int(stack_env["CDR_S3_ENDPOINT"].rsplit(":", 1)[1]))
    run = LocalPipeline(stack_env, tmp_path, operators=2, partitions=2,
                        extra_env={"CDR_S3_ENDPOINT": f"http://127.0.0.1:{s3.port}"})
    try:
        run.start("bridge", "bridge")
        worker = run.start("worker", "worker", CDR_WORKER_AGENTS=AGENTS, CDR_EXPORT_POLL_INTERVAL_S="0.5",
                           CDR_DELIVERY_METHOD="sftp")
        traffic = list(synthetic_dlrs(seed=23, start=DAY + dt.timedelta(hours=1), count=DLRS, operators=run.operators,
                                      spacing_ms=7_000, id_prefix=f"{run.namespace}-e2e"))
        documents = [json.dumps(d).encode() for d in traffic]
        await run.publish(documents, msg_ids=[d["dlr_id"] for d in traffic])
        stored = len(expected_cdr_ids(run, documents))
        await wait_stored(run, stored, timeout=400, what="10,000 DLRs stored as CDRs")
        tick = subprocess.run([sys.executable, "-m", "cdr_mediation.cli", "clock", "tick", "--at",
                               (DAY + dt.timedelta(days=1, hours=2, minutes=1)).isoformat(), "--allow-future",
                               *[arg for op in run.operators for arg in ("--operator", op)]],
                              env={**os.environ, **run.env}, capture_output=True, text=True, timeout=120)
        assert tick.returncode == 0, tick.stderr
        log = run.log_path("worker")

        await eventually(lambda: _acked(run), timeout=300, what="both exports ACKED", log=log, alive=worker)
        # S3 was unreachable all along: nothing is archived, the failures are in the log, and
        # nothing was lost. Then it comes back, and the follow-up archives everything.
        assert await query_rows(run, "SELECT 1 FROM export_archive WHERE operator_id LIKE $1", f"{run.namespace}-%") == []
        assert "export object not archived; retried at the next poll" in log.read_text()
        await s3.up()
        archived = await eventually(lambda: _archived(run), timeout=120, what="every export object archived",
                                    log=log, alive=worker)

        client = boto3.client("s3", endpoint_url=stack_env["CDR_S3_ENDPOINT"], region_name=stack_env["CDR_S3_REGION"],
                              aws_access_key_id=stack_env["CDR_S3_ACCESS_KEY"],
                              aws_secret_access_key=stack_env["CDR_S3_SECRET_KEY"])
        expected_until = retain_until(day_cut_off(DAY.date().isoformat()), 2557)
        total_records = 0
        for row in archived:
            head = client.head_object(Bucket=stack_env["CDR_S3_BUCKET"], Key=row["object_key"])
            assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockRetainUntilDate"] == expected_until
            body = client.get_object(Bucket=stack_env["CDR_S3_BUCKET"], Key=row["object_key"])["Body"].read()
            assert hashlib.sha256(body).hexdigest() == row["sha256"].strip()
            if row["kind"] == "checkpoint":
                total_records += json.loads(body)["record_count"]
            if row["kind"] == "answer":
                assert json.loads(body)["sha256"] == row["zip_sha256"]  # the ACK of the archived ZIP
        assert {r["kind"] for r in archived} == {"zip", "signature", "checkpoint", "checkpoint_signature", "answer"}
        assert total_records == stored  # every CDR of the day is in exactly one archived file

        for operator_id in run.operators:
            rebuild = subprocess.run([sys.executable, "-m", "cdr_mediation.cli", "export", "rebuild", "--operator",
                                      operator_id, "--day", DAY.date().isoformat()],
                                     env={**os.environ, **run.env, "CDR_S3_ENDPOINT": stack_env["CDR_S3_ENDPOINT"]},
                                     capture_output=True, text=True, timeout=300)
            assert rebuild.returncode == 0, rebuild.stdout + rebuild.stderr
            report = [json.loads(line) for line in rebuild.stdout.splitlines()]
            assert [e["result"] for e in report[:-1]] == ["identical"] * 4 and report[-1]["ok"] is True
    finally:
        run.stop_all()
        await s3.close()
