"""The verifier on the real stack (PostgreSQL, the SoftHSM token, SFTP, the portal over mutual TLS):
stored CDRs of two days, the first exported by the exporter itself (built, HSM-signed, delivered);
then a verification run that finds everything intact, a superuser's edit behind the append-only
trigger found as a chain break and a checkpoint mismatch, exports halted under fail-fast until
the row is repaired and verified again, and `POST /v1/cdr/chain/verify` for each role allowed.

Each test has a database of its own (`fresh_database`), so a run over all operators sees only its
data and the tampering never reaches the session's shared database."""

from __future__ import annotations

import datetime as dt
import json
import ssl
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from prometheus_client import REGISTRY

from cdr_mediation.agents.exporter import CHAIN_BREAK, Exporter, ExportHalted
from cdr_mediation.agents.pg_sink import SinkReadiness
from cdr_mediation.agents.verifier import VerificationBusy, run_verification
from cdr_mediation.agents.verify_job import VerificationJob
from cdr_mediation.domain.chain import BreakKind
from cdr_mediation.domain.day_close import DayClosed
from cdr_mediation.domain.export_config import file_name, load_export_config
from cdr_mediation.infra.cms_verify import load_trust_anchors
from cdr_mediation.infra.postgres.audit_store import read_audit
from cdr_mediation.infra.postgres.cdr_store import append_entries
from cdr_mediation.infra.postgres.export_store import current_state, ensure_export
from cdr_mediation.infra.postgres.verification_store import try_verification_lock
from cdr_mediation.domain.export_lifecycle import ExportState
from cdr_mediation.settings import Settings
from cdr_mediation.stack.pipeline import export_config_document
from cdr_mediation.stack.process import free_port
from tests.integration.support.portal import portal_tls
from tests.integration.support.processes import eventually, spawn, stop
from tests.integration.test_rollup_store import chain

UTC = dt.timezone.utc
DAY_1 = dt.datetime(2026, 11, 3, tzinfo=UTC)
DAY_2 = DAY_1 + dt.timedelta(days=1)
TAMPERED_SEQ = 3


class World:
    """One test's database, operator, stored chain, closed days and exporters."""

    def __init__(self, stack, stack_env: dict, dsn: str, database: str, tmp_path: Path) -> None:
        self.postgres = stack.components["postgres"]
        self.database = database
        self.operator_id = f"ver-{uuid.uuid4().hex[:8]}"
        config = tmp_path / "export-config.json"
        config.write_text(json.dumps(export_config_document([self.operator_id], f"n{uuid.uuid4().hex[:8]}")))
        self.env = {**stack_env, "CDR_PG_DSN": dsn, "CDR_EXPORT_CONFIG_FILE": str(config),
                    "CDR_EXPORT_DIR": str(tmp_path / "exports"), "CDR_DATA_DIR": str(tmp_path / "data"),
                    "CDR_DELIVERY_METHOD": "sftp", "CDR_CHAIN_VERIFY_FAIL_FAST": "true"}
        self.settings = Settings.load(self.env)
        self.anchors = load_trust_anchors(Path(self.env["CDR_HSM_CA_CERT"]).read_bytes())
        self.export_config = load_export_config(config.read_bytes())
        self.exporters: list[Exporter] = []
        self.pairs: list = []
        self.closed: list[DayClosed] = []

    def exporter(self, **env: str) -> Exporter:
        made = Exporter(Settings.load({**self.env, **env}), SinkReadiness())
        self.exporters.append(made)
        return made

    def file_name(self, closed: DayClosed) -> str:
        return file_name(self.export_config, self.export_config.operator(self.operator_id), closed.day_sequence)

    async def store_two_days(self, conn) -> None:
        """Five entries on day 1, three on day 2, and the records that closed each day."""
        moments = [DAY_1 + dt.timedelta(hours=h) for h in (8, 10, 12, 14, 16)]
        moments += [DAY_2 + dt.timedelta(hours=h) for h in (9, 11, 13)]
        self.pairs, _ = chain(self.operator_id, moments)
        assert await append_entries(conn, self.pairs) == len(self.pairs)
        for sequence, last in ((1, self.pairs[4]), (2, self.pairs[7])):
            entry, digest = last
            self.closed.append(DayClosed(self.operator_id, entry["done_at"][:10], "event", entry["chain_seq"], digest,
                                         entry["done_at"], sequence))
        for closed in self.closed:
            await ensure_export(conn, closed, self.file_name(closed))

    async def superuser_edit(self, sql: str, *args) -> None:
        """An edit behind the append-only trigger, as only a superuser can make it."""
        superuser = await self.postgres._superuser(self.database)
        try:
            await superuser.execute("ALTER TABLE cdr DISABLE TRIGGER cdr_append_only_rows")
            try:
                await superuser.execute(sql, *args)
            finally:
                await superuser.execute("ALTER TABLE cdr ENABLE TRIGGER cdr_append_only_rows")
        finally:
            await superuser.close()

    async def tamper(self) -> None:
        await self.superuser_edit("UPDATE cdr SET amount_minor = amount_minor + 100 "
                                  "WHERE operator_id = $1 AND chain_seq = $2", self.operator_id, TAMPERED_SEQ)

    async def repair(self) -> None:
        await self.superuser_edit("UPDATE cdr SET amount_minor = $3 WHERE operator_id = $1 AND chain_seq = $2",
                                  self.operator_id, TAMPERED_SEQ, self.pairs[TAMPERED_SEQ - 1][0]["amount_minor"])


@pytest.fixture
async def world(stack, stack_env, tmp_path):
    postgres = stack.components["postgres"]
    database = f"verifier_{uuid.uuid4().hex[:8]}"
    dsn = await postgres.fresh_database(database)
    made = World(stack, stack_env, dsn, database, tmp_path)
    conn = await asyncpg.connect(dsn)
    try:
        await made.store_two_days(conn)
        yield made, conn
    finally:
        await conn.close()
        for exporter in made.exporters:
            await exporter.close()
        admin = await postgres._superuser("postgres")
        try:
            await admin.execute(f"DROP DATABASE {database} WITH (FORCE)")
        finally:
            await admin.close()


async def _exported_day_1(world: World, conn) -> Exporter:
    """Day 1 driven by the exporter to DELIVERED: BUILT (checkpoint), SIGNED (HSM), delivered over SFTP."""
    exporter = world.exporter()
    await exporter.handle(world.closed[0])
    assert (await current_state(conn, world.operator_id, world.closed[0].day))[0] is ExportState.DELIVERED
    return exporter


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _verifications(conn) -> list:
    entries, _ = await read_audit(conn, action="chain.verify", limit=100)
    return entries


async def test_a_clean_run_finds_chains_and_checkpoints_intact_and_records_itself(world):
    world, conn = world
    await _exported_day_1(world, conn)
    job = VerificationJob(world.settings)
    runs_ok = _metric("cdr_chain_verify_runs_total", result="ok")
    before = dt.datetime.now(UTC).timestamp()

    run = await job.run_if_due()  # nothing recorded yet: due
    assert run is not None and run.ok
    [chain_result] = run.chains
    assert (chain_result.operator_id, chain_result.verified, chain_result.head.head_hash) == (
        world.operator_id, 8, world.pairs[-1][1])
    [verdict] = run.checkpoints  # day 2 is not built: it has no checkpoint to check
    assert verdict.to_dict() == {"operator_id": world.operator_id, "day": "2026-11-03",
                                 "file_name": world.file_name(world.closed[0]), "ok": True, "status": "ok"}
    [entry] = await _verifications(conn)
    assert (entry.actor, entry.actor_role, entry.refs) == ("verifier", "system", {"operator_ids": [world.operator_id]})
    assert entry.detail == run.detail() and (entry.detail["ok"], entry.detail["scope"]) == (True, "all")
    assert _metric("cdr_chain_verify_runs_total", result="ok") == runs_ok + 1
    assert _metric("cdr_chain_verify_last_success_timestamp_seconds") >= before

    # The daily job is not due again within its interval, on this worker or any other.
    assert await job.run_if_due() is None and len(await _verifications(conn)) == 1
    # While another session runs one, a run is skipped, not queued.
    other = await asyncpg.connect(world.env["CDR_PG_DSN"])
    try:
        assert await try_verification_lock(other)
        with pytest.raises(VerificationBusy):
            await run_verification(conn, world.anchors, request_id="busy")
    finally:
        await other.close()
    assert await run_verification(conn, world.anchors, request_id="after", operator_ids=[world.operator_id])


async def test_an_edit_behind_the_trigger_is_a_chain_break_and_a_checkpoint_mismatch(world):
    world, conn = world
    await _exported_day_1(world, conn)
    op = world.operator_id
    breaks = _metric("cdr_chain_breaks_total", operator_id=op)
    mismatches = _metric("cdr_checkpoint_mismatches_total", operator_id=op)
    failed = _metric("cdr_chain_verify_runs_total", result="failed")
    await world.tamper()

    run = await run_verification(conn, world.anchors, request_id="tampered")
    assert not run.ok
    [chain_result] = run.chains
    fault = chain_result.first_break
    assert (fault.kind, fault.seq, fault.found) == (BreakKind.HASH_MISMATCH, TAMPERED_SEQ, world.pairs[2][1])
    assert chain_result.verified == TAMPERED_SEQ - 1
    [verdict] = run.checkpoints
    assert verdict.status.value == "mismatch" and not verdict.ok
    total = sum(entry["amount_minor"] for entry, _ in world.pairs[:5])  # day 1's file
    assert f"totals.amount_minor: recorded {total}, recomputed {total + 100}" in verdict.detail
    assert "signature" not in verdict.detail  # what was signed is what was recorded
    assert _metric("cdr_chain_breaks_total", operator_id=op) == breaks + 1
    assert _metric("cdr_checkpoint_mismatches_total", operator_id=op) == mismatches + 1
    assert _metric("cdr_chain_verify_runs_total", result="failed") == failed + 1
    [entry] = await _verifications(conn)
    assert entry.detail["ok"] is False and entry.request_id == "tampered"
    [result] = entry.detail["results"]
    assert (result["ok"], result["first_break"]["kind"], result["first_break"]["seq"]) == (
        False, "hash_mismatch", TAMPERED_SEQ)
    assert entry.detail["checkpoints"] == [verdict.to_dict()]


async def test_with_fail_fast_a_break_halts_the_operators_exports_until_verified_intact(world):
    world, conn = world
    exporter = await _exported_day_1(world, conn)
    relaxed = world.exporter(CDR_CHAIN_VERIFY_FAIL_FAST="false")
    op, day_2 = world.operator_id, world.closed[1]
    halted = _metric("cdr_export_halted_total", reason=CHAIN_BREAK)
    await world.tamper()
    assert not (await run_verification(conn, world.anchors, request_id="found")).ok

    with pytest.raises(ExportHalted) as refused:
        await exporter.refuse_if_chain_broken(op)
    assert refused.value.reason == CHAIN_BREAK
    await relaxed.refuse_if_chain_broken(op)  # without fail-fast the break is reported, exports go on
    await exporter.handle(day_2)  # the closed day arrives: nothing is built
    assert (await current_state(conn, op, day_2.day))[0] is ExportState.PENDING
    assert _metric("cdr_export_halted_total", reason=CHAIN_BREAK) == halted + 1
    await exporter.drive_lifted()  # still broken: still waiting
    assert (await current_state(conn, op, day_2.day))[0] is ExportState.PENDING

    await world.repair()
    await exporter.drive_lifted()  # repaired but not verified yet: the recorded run still says broken
    assert (await current_state(conn, op, day_2.day))[0] is ExportState.PENDING
    assert (await run_verification(conn, world.anchors, request_id="repaired", operator_ids=[op])).ok
    await exporter.refuse_if_chain_broken(op)
    await exporter.drive_lifted()  # what the follow-up does every poll
    assert (await current_state(conn, op, day_2.day))[0] is ExportState.DELIVERED


async def _post(url: str, tls: ssl.SSLContext, **kwargs) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.post(url, ssl=tls, timeout=aiohttp.ClientTimeout(total=60), **kwargs) as response:
            return response.status, await response.json()


async def _healthy(url: str) -> bool:
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            return response.status == 200


async def test_the_endpoint_runs_a_verification_for_admin_auditor_and_regulator(world, stack_env, tmp_path):
    world, conn = world
    await _exported_day_1(world, conn)
    port, probe_port = free_port(), free_port()
    log = tmp_path / "portal.log"
    portal = spawn(["-m", "cdr_mediation.cli", "portal"], log_path=log,
                   env={**world.env, "CDR_PORTAL_PORT": str(port), "CDR_PORTAL_PROBE_PORT": str(probe_port),
                        "CDR_METRICS_PORT": "0"})
    try:
        await eventually(lambda: _healthy(f"http://127.0.0.1:{probe_port}/healthz"), timeout=60,
                         what="portal /healthz", log=log, alive=portal)
        url = f"https://127.0.0.1:{port}/v1/cdr/chain/verify"
        for role in ("admin", "auditor", "regulator"):
            status, report = await _post(url, portal_tls(stack_env, role), json={"operator_id": world.operator_id})
            assert status == 200, report
            assert report["ok"] is True and set(report) == {"ok", "request_id", "results", "checkpoints"}
            [result] = report["results"]
            assert (result["operator_id"], result["verified"], result["head"]) == (
                world.operator_id, 8, {"chain_seq": 8, "head_hash": world.pairs[-1][1]})
            assert [c["status"] for c in report["checkpoints"]] == ["ok"]
            [entry] = [e for e in await _verifications(conn) if e.request_id == report["request_id"]]
            assert (entry.actor, entry.actor_role, entry.detail["ok"]) == (f"{role}.portal.localhost", role, True)

        status, report = await _post(url, portal_tls(stack_env, "auditor"))  # no body: every operator
        assert status == 200 and [r["operator_id"] for r in report["results"]] == [world.operator_id]
        await world.tamper()
        status, report = await _post(url, portal_tls(stack_env, "regulator"), json={"operator_id": world.operator_id})
        assert status == 200 and report["ok"] is False
        assert report["results"][0]["first_break"]["seq"] == TAMPERED_SEQ
        assert report["checkpoints"][0]["status"] == "mismatch"
        status, body = await _post(url, portal_tls(stack_env, "admin"), json={"operator_id": "no-such-operator"})
        assert status == 404 and body["error"]["code"] == "unknown_operator"
        status, body = await _post(url, portal_tls(stack_env, "admin"), json={"operator": world.operator_id})
        assert status == 400 and body["error"]["code"] == "bad_request"
    finally:
        stop(portal)
