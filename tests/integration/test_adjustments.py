"""Adjustments on the real stack, from the admin's request to the regulator's evidence.

A day of DLRs is exported (file 1). An admin then voids one CDR and corrects another through the
portal over mutual TLS: each request, its audit entry and its outbox message commit together;
the relay publishes it to the adjustment topic, the forwarder puts it in the operator's DLR log,
the ingest agent appends a VOID / CORRECT entry to the chain, the store keeps it, the rollups of
the record's (closed) hour get a netting correction, and the next day's file carries both
entries — provably: the standalone verifier accepts the VOID's inclusion proof.

Also shown: the same Idempotency-Key and body replays the first answer, another body is
refused, a second VOID is refused, the regulator may not adjust, and with
CDR_ADJUSTMENT_ENABLED=false a portal refuses with a clear error.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from cdr_mediation.domain.adjustment import CORRECTABLE_FIELDS, adjustment_id_for, parse_body, request_for
from cdr_mediation.domain.synthetic import synthetic_dlrs
from cdr_mediation.infra.postgres.adjustment_store import create_adjustment
from cdr_mediation.infra.postgres.cdr_store import fetch_entry
from cdr_mediation.stack.pipeline import LocalPipeline
from cdr_mediation.stack.process import free_port
from cdr_mediation.topology.topics import ADJUSTMENT
from tests.integration.support.observe import expected_cdr_ids, query_rows, wait_stored
from tests.integration.support.portal import portal_tls
from tests.integration.support.portal_process import RunningPortal
from tests.integration.support.processes import eventually, spawn, stop

DAY = dt.datetime(2026, 10, 24, tzinfo=dt.timezone.utc)
AGENTS = "ingest,store,rollup,rollup-store,exporter"
ADMIN = "admin.portal.localhost"  # the CN of the stack's admin client certificate: the actor
REPO = Path(__file__).resolve().parents[2]


async def _call(method: str, url: str, tls: ssl.SSLContext | bool, **kwargs) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, ssl=tls, timeout=aiohttp.ClientTimeout(total=60), **kwargs) as response:
            return response.status, await response.json(content_type=None)


def _tick(run: LocalPipeline, at: dt.datetime) -> None:
    result = subprocess.run([sys.executable, "-m", "cdr_mediation.cli", "clock", "tick", "--at", at.isoformat(),
                             "--allow-future", *[arg for op in run.operators for arg in ("--operator", op)]],
                            env={**os.environ, **run.env}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


async def _delivered(run: LocalPipeline, day: dt.date):
    rows = await query_rows(run, "SELECT f.file_name, f.day_closed, (SELECT detail FROM export_transition t WHERE "
                             "t.operator_id = f.operator_id AND t.day = f.day AND t.to_state = 'BUILT' LIMIT 1) AS built, "
                             "(SELECT to_state FROM export_transition t WHERE t.operator_id = f.operator_id AND "
                             "t.day = f.day ORDER BY step DESC LIMIT 1) AS state "
                             "FROM export_file f WHERE f.operator_id = $1 AND f.day = $2", run.operators[0], day)
    return rows[0] if rows and rows[0]["state"] in ("DELIVERED", "ACKED") else None


async def _publish(run: LocalPipeline, start: dt.datetime, count: int, seed: int, prefix: str) -> int:
    traffic = list(synthetic_dlrs(seed=seed, start=start, count=count, operators=run.operators, spacing_ms=600_000,
                                  id_prefix=f"{run.namespace}-{prefix}"))
    documents = [json.dumps(d).encode() for d in traffic]
    await run.publish(documents, msg_ids=[d["dlr_id"] for d in traffic])
    return len(expected_cdr_ids(run, documents))


@pytest.mark.slow
async def test_an_adjustment_travels_from_the_portal_to_the_chain_the_rollups_and_the_next_file(
        stack_env, stack, tmp_path):
    run = LocalPipeline(stack_env, tmp_path, operators=1, partitions=1)
    operator_id = run.operators[0]
    processes = []
    try:
        run.start("bridge", "bridge")
        worker = run.start("worker", "worker", CDR_WORKER_AGENTS=AGENTS, CDR_EXPORT_POLL_INTERVAL_S="0.5",
                           CDR_DELIVERY_METHOD="sftp")
        relay_log = tmp_path / "relay.log"
        processes.append(spawn(["-m", "cdr_mediation.cli", "outbox", "relay"], log_path=relay_log,
                               env={**run.env, "CDR_METRICS_PORT": str(free_port())}))
        port, probe_port = free_port(), free_port()
        portal_log = tmp_path / "portal.log"
        portal = spawn(["-m", "cdr_mediation.cli", "portal"], log_path=portal_log,
                       env={**run.env, "CDR_PORTAL_PORT": str(port), "CDR_PORTAL_PROBE_PORT": str(probe_port),
                            "CDR_METRICS_PORT": str(free_port())})
        processes.append(portal)
        base = f"https://127.0.0.1:{port}"
        admin, regulator = portal_tls(stack_env, "admin"), portal_tls(stack_env, "regulator")

        # Day 1 (18 DLRs, 08:00-11:00), closed and exported as file 1.
        day1 = await _publish(run, DAY + dt.timedelta(hours=8), 18, seed=21, prefix="d1")
        await wait_stored(run, day1, timeout=240, what="day 1 stored")
        _tick(run, DAY + dt.timedelta(days=1, hours=2, minutes=1))
        first = await eventually(lambda: _delivered(run, DAY.date()), timeout=300, what="file 1 delivered",
                                 log=run.log_path("worker"), alive=worker)
        rows = await query_rows(run, "SELECT cdr_id, amount_minor, status, done_at FROM cdr WHERE operator_id = $1 "
                                 "AND amount_minor > 0 ORDER BY chain_seq", operator_id)
        voided, corrected = rows[0], rows[1]

        await eventually(lambda: _call("GET", f"{base}/v1/adjustments/00000000-0000-5000-8000-000000000000", admin),
                         timeout=60, what="portal up", log=portal_log, alive=portal)
        void_body = {"kind": "VOID", "ref_cdr_id": voided["cdr_id"], "ticket_ref": "OPS-1001"}
        status, void = await _call("POST", f"{base}/v1/adjustments", admin, json=void_body,
                                   headers={"Idempotency-Key": "ops-1001-void"})
        assert status == 202 and void["status"] == "accepted" and void["actor"] == ADMIN, void
        # The same key and body: the first answer again. Another body under it: refused.
        assert await _call("POST", f"{base}/v1/adjustments", admin, json=void_body,
                           headers={"Idempotency-Key": "ops-1001-void"}) == (202, void)
        status, error = await _call("POST", f"{base}/v1/adjustments", admin,
                                    json={**void_body, "ticket_ref": "OPS-9"}, headers={"Idempotency-Key": "ops-1001-void"})
        assert (status, error["error"]["code"]) == (409, "idempotency_key_reused")
        status, error = await _call("POST", f"{base}/v1/adjustments", regulator, json=void_body,
                                    headers={"Idempotency-Key": "reg-1"})
        assert status == 403, error

        [entry] = await query_rows(run, "SELECT * FROM cdr WHERE cdr_id = $1", corrected["cdr_id"])
        record = {name: entry[name] for name in CORRECTABLE_FIELDS}
        record["submitted_at"] = entry["submitted_at"].strftime("%Y-%m-%dT%H:%M:%S.") + \
            f"{entry['submitted_at'].microsecond // 1000:03d}Z"
        record["amount_minor"] += 100
        status, correct = await _call("POST", f"{base}/v1/adjustments", admin, headers={"Idempotency-Key": "ops-1002"},
                                      json={"kind": "CORRECT", "ref_cdr_id": corrected["cdr_id"],
                                            "ticket_ref": "OPS-1002", "corrected": record})
        assert status == 202, correct

        async def applied():
            answers = [await _call("GET", f"{base}/v1/adjustments/{a['adjustment_id']}", admin) for a in (void, correct)]
            return answers if all(body.get("status") == "applied" for _, body in answers) else None

        answers = await eventually(applied, timeout=180, what="both adjustments applied", log=run.log_path("worker"),
                                   alive=worker)
        chain = await query_rows(run, "SELECT chain_seq, record_type, ref_cdr_id, amount_minor, ticket_ref, actor "
                                  "FROM cdr WHERE operator_id = $1 ORDER BY chain_seq", operator_id)
        assert [(r["record_type"], r["ref_cdr_id"], r["ticket_ref"], r["actor"]) for r in chain[day1:]] == [
            ("VOID", voided["cdr_id"], "OPS-1001", ADMIN), ("CORRECT", corrected["cdr_id"], "OPS-1002", ADMIN)]
        assert [body["chain_seq"] for _, body in answers] == [day1 + 1, day1 + 2]
        assert chain[day1]["amount_minor"] == 0 and chain[day1 + 1]["amount_minor"] == corrected["amount_minor"] + 100
        status, error = await _call("POST", f"{base}/v1/adjustments", admin, json=void_body,
                                    headers={"Idempotency-Key": "ops-1003"})
        assert (status, error["error"]["code"]) == (409, "already_voided")

        # Day 2 closes: its file carries the two adjustments of day 1 beside its own CDRs.
        day2 = await _publish(run, DAY + dt.timedelta(days=1, hours=8), 6, seed=22, prefix="d2")
        await wait_stored(run, day1 + 2 + day2, timeout=240, what="day 2 stored")
        _tick(run, DAY + dt.timedelta(days=2, hours=2, minutes=1))
        second = await eventually(lambda: _delivered(run, (DAY + dt.timedelta(days=1)).date()), timeout=300,
                                  what="file 2 delivered", log=run.log_path("worker"), alive=worker)
        checkpoint1 = json.loads(first["built"])["checkpoint"]
        checkpoint2 = json.loads(second["built"])["checkpoint"]
        assert checkpoint1["record_count"] == day1 and checkpoint1["totals"]["adjustments"] == {"VOID": 0, "CORRECT": 0}
        assert checkpoint2["record_count"] == day2 + 2
        assert checkpoint2["totals"]["adjustments"] == {"VOID": 1, "CORRECT": 1}

        # The rollups of day 1 net both: the merged hours are the records in force, and
        # reconciliation against the stored chain finds no difference.
        merged = await query_rows(run, "SELECT sum(records) AS records, sum(amount_minor) AS amount, "
                                   "sum(adjustments_void) AS voids, sum(adjustments_correct) AS corrects "
                                   "FROM rollup_closed WHERE operator_id = $1 AND hour_start >= $2 AND hour_start < $3",
                              operator_id, DAY, DAY + dt.timedelta(days=1))
        originals = await query_rows(run, "SELECT count(*) AS n, sum(amount_minor) AS amount FROM cdr WHERE operator_id = $1 "
                                      "AND record_type = 'CDR' AND done_at < $2", operator_id, DAY + dt.timedelta(days=1))
        assert merged[0]["records"] == originals[0]["n"] - 1
        assert merged[0]["amount"] == originals[0]["amount"] - voided["amount_minor"] + 100
        assert (merged[0]["voids"], merged[0]["corrects"]) == (1, 1)
        reconcile = subprocess.run([sys.executable, "-m", "cdr_mediation.cli", "reconcile", "--day", DAY.date().isoformat(),
                                    "--operator", operator_id], env={**os.environ, **run.env}, capture_output=True,
                                   text=True, timeout=120)
        assert reconcile.returncode == 0, reconcile.stdout + reconcile.stderr

        # The VOID is provably in file 2.
        status, proof = await _call("GET", f"{base}/v1/cdrs/{void['cdr_id']}/proof", regulator)
        assert status == 200, proof
        path = tmp_path / "void.proof.json"
        path.write_text(json.dumps(proof))
        verdict = subprocess.run([sys.executable, "-I", str(REPO / "tools" / "verify_proof.py"), str(path), "--ca",
                                  run.env["CDR_HSM_CA_CERT"]], capture_output=True, text=True, timeout=60)
        assert verdict.returncode == 0, verdict.stderr
        assert json.loads(verdict.stdout)["file_name"] == second["file_name"]

        audit = await query_rows(run, "SELECT actor, refs FROM audit_log WHERE action = 'adjustment.create' "
                                  "AND refs->>'operator_id' = $1 ORDER BY audit_seq", operator_id)
        assert [(a["actor"], json.loads(a["refs"])["cdr_id"]) for a in audit] == [
            (ADMIN, voided["cdr_id"]), (ADMIN, corrected["cdr_id"])]
        log = portal_log.read_text() + run.log_path("worker").read_text()
        for row in await query_rows(run, "SELECT msisdn FROM cdr WHERE operator_id = $1", operator_id):
            assert row["msisdn"] not in log
    finally:
        for process in processes:
            stop(process)
        run.stop_all()


async def test_with_adjustments_disabled_the_portal_refuses_them(stack_env, stack, tmp_path):
    port, probe_port = free_port(), free_port()
    portal_log = tmp_path / "portal.log"
    portal = spawn(["-m", "cdr_mediation.cli", "portal"], log_path=portal_log,
                   env={**stack_env, "CDR_ADJUSTMENT_ENABLED": "false", "CDR_PORTAL_PORT": str(port),
                        "CDR_PORTAL_PROBE_PORT": str(probe_port), "CDR_METRICS_PORT": str(free_port())})
    try:
        body = {"kind": "VOID", "ref_cdr_id": "4df915ca-f22c-5214-9542-631074267f2a", "ticket_ref": "T-1"}
        status, error = await eventually(
            lambda: _call("POST", f"https://127.0.0.1:{port}/v1/adjustments", portal_tls(stack_env, "admin"),
                          json=body, headers={"Idempotency-Key": "k-1"}),
            timeout=60, what="portal up", log=portal_log, alive=portal)
        assert status == 403 and error["error"]["code"] == "adjustments_disabled", error
        assert "CDR_ADJUSTMENT_ENABLED=false" in error["error"]["message"]
    finally:
        stop(portal)


@pytest.mark.slow
async def test_a_request_the_chain_refuses_is_reported_refused_and_blocks_nothing(stack_env, stack, tmp_path):
    """Two replicas of the portal may both accept a CORRECT of one record from the same view; the
    chain applies the first and refuses the second (`stale_version`). The refusal reaches
    PostgreSQL through the CDR topic: the second request's status says "refused" and why, and
    the record can still be adjusted (a refused request is no longer pending)."""
    run = LocalPipeline(stack_env, tmp_path, operators=1, partitions=1)
    processes = []
    try:
        run.start("bridge", "bridge")
        worker = run.start("worker", "worker", CDR_WORKER_AGENTS="ingest,store,rollup,rollup-store")
        processes.append(spawn(["-m", "cdr_mediation.cli", "outbox", "relay"], log_path=tmp_path / "relay.log",
                               env={**run.env, "CDR_METRICS_PORT": str(free_port())}))
        stored = await _publish(run, DAY + dt.timedelta(hours=8), 6, seed=31, prefix="race")
        await wait_stored(run, stored, timeout=180, what="CDRs stored")
        [row] = await query_rows(run, "SELECT cdr_id FROM cdr WHERE operator_id = $1 AND amount_minor > 0 "
                                      "ORDER BY chain_seq LIMIT 1", run.operators[0])
        conn = await asyncpg.connect(run.env["CDR_PG_DSN"])
        try:
            original = await fetch_entry(conn, row["cdr_id"])
        finally:
            await conn.close()
        corrected = {name: original[name] for name in CORRECTABLE_FIELDS}
        corrected["amount_minor"] += 50
        body = {"kind": "CORRECT", "ref_cdr_id": row["cdr_id"], "ticket_ref": "OPS-RACE", "corrected": corrected}

        async with RunningPortal(run.env, tmp_path / "portal.log") as portal:
            admin = portal_tls(stack_env, "admin")
            status, first = await _call("POST", f"{portal.base}/v1/adjustments", admin, json=body,
                                        headers={"Idempotency-Key": "race-1"})
            assert status == 202, first

            async def status_of(adjustment_id: str, wanted: str):
                code, answer = await _call("GET", f"{portal.base}/v1/adjustments/{adjustment_id}", admin)
                return answer if code == 200 and answer["status"] == wanted else None

            await eventually(lambda: status_of(first["adjustment_id"], "applied"), timeout=120,
                             what="first CORRECT applied", log=run.log_path("worker"), alive=worker)
            # The other replica's request, decided from the same (now superseded) view.
            request = request_for(parse_body({**body, "ticket_ref": "OPS-RACE-2"}),
                                  adjustment_id=adjustment_id_for("race-2"), actor=ADMIN,
                                  current={k: v for k, v in original.items() if k != "record_hash"},
                                  current_hash=original["record_hash"])
            response = {"adjustment_id": request.adjustment_id, "operator_id": request.operator_id,
                        "kind": "CORRECT", "ref_cdr_id": request.ref_cdr_id, "cdr_id": request.cdr_id,
                        "ticket_ref": request.ticket_ref, "actor": ADMIN, "status": "accepted"}
            conn = await asyncpg.connect(run.env["CDR_PG_DSN"])
            try:
                await create_adjustment(conn, idempotency_key="race-2", body_digest="0" * 64, request=request,
                                        response=response, request_id="race-2", actor_role="admin",
                                        topic=ADJUSTMENT.named(run.env["CDR_TOPIC_PREFIX"]).name)
            finally:
                await conn.close()
            refused = await eventually(lambda: status_of(request.adjustment_id, "refused"), timeout=120,
                                       what="second CORRECT refused", log=run.log_path("worker"), alive=worker)
            assert refused["refusal"]["code"] == "stale_version" and refused["refusal"]["detail"]
            assert "chain_seq" not in refused

            # Not pending any more: the record can be voided.
            status, void = await _call("POST", f"{portal.base}/v1/adjustments", admin,
                                       json={"kind": "VOID", "ref_cdr_id": row["cdr_id"], "ticket_ref": "OPS-RACE-3"},
                                       headers={"Idempotency-Key": "race-3"})
            assert status == 202, void
            await eventually(lambda: status_of(void["adjustment_id"], "applied"), timeout=120,
                             what="VOID applied", log=run.log_path("worker"), alive=worker)
        chain = await query_rows(run, "SELECT record_type, ticket_ref FROM cdr WHERE operator_id = $1 "
                                      "AND record_type <> 'CDR' ORDER BY chain_seq", run.operators[0])
        assert [(r["record_type"], r["ticket_ref"]) for r in chain] == [("CORRECT", "OPS-RACE"), ("VOID", "OPS-RACE-3")]
    finally:
        for process in processes:
            stop(process)
        run.stop_all()
