"""`GET /v1/cdrs/{cdr_id}/proof` (portal/proofs.py): id checks, the answers for each reason a
proof cannot be given, and the one error shape — without PostgreSQL (the assembly from the real
database is tests/integration/test_proofs.py)."""

from __future__ import annotations

import contextlib
import json
import logging

import pytest
from aiohttp.test_utils import TestClient, TestServer

from cdr_mediation.infra.postgres import proof_store
from cdr_mediation.portal.app import create_portal
from cdr_mediation.portal.db import PortalDatabase
from cdr_mediation.stack.process import free_port
from tests.unit.domain.test_inclusion_proof import make

CDR_ID = "4df915ca-f22c-5214-9542-631074267f2a"


async def _portal(pg_dsn: str | None) -> TestClient:
    client = TestClient(TestServer(create_portal({}, pg_dsn=pg_dsn, subject_of=_regulator)))
    await client.start_server()
    return client


@pytest.fixture
def stored(monkeypatch):
    """The database replaced by `answer` (an exception to raise or a proof to return)."""
    outcome = {}

    class Pool:
        @contextlib.asynccontextmanager
        async def acquire(self, timeout):
            yield "a connection"

    async def get_pool(self):
        return Pool()

    async def assemble(conn, cdr_id):
        outcome["asked"] = cdr_id
        if isinstance(outcome["answer"], Exception):
            raise outcome["answer"]
        return outcome["answer"]

    monkeypatch.setattr(PortalDatabase, "_get_pool", get_pool)
    monkeypatch.setattr(proof_store, "assemble_proof", assemble)
    return outcome


@pytest.mark.parametrize("bad", ["not-a-uuid", CDR_ID.upper(), CDR_ID[:-1], CDR_ID + "0", "{" + CDR_ID + "}",
                                 CDR_ID.replace("-", "")])
async def test_an_id_that_is_not_a_cdr_id_is_a_400(bad: str, stored) -> None:
    client = await _portal("postgresql://unused@127.0.0.1:1/x")
    try:
        response = await client.get(f"/v1/cdrs/{bad}/proof")
        assert response.status == 400
        error = (await response.json())["error"]
        assert set(error) == {"code", "message"} and error["code"] == "bad_request"
        assert "is not a cdr_id" in error["message"] and "asked" not in stored
    finally:
        await client.close()


async def test_a_proof_is_served_as_the_document(stored) -> None:
    proof = make(7)
    stored["answer"] = proof
    client = await _portal("postgresql://unused@127.0.0.1:1/x")
    try:
        response = await client.get(f"/v1/cdrs/{proof.cdr_id}/proof")
        assert response.status == 200 and response.content_type == "application/json"
        assert await response.text() == proof.to_json() and stored["asked"] == proof.cdr_id
    finally:
        await client.close()


@pytest.mark.parametrize("reason, status", [("unknown_cdr", 404), ("day_not_exported", 409),
                                            ("after_day_close", 409), ("not_signed", 409)])
async def test_no_signed_file_holds_it(reason: str, status: int, stored) -> None:
    stored["answer"] = proof_store.ProofUnavailable(reason, f"because {reason}")
    client = await _portal("postgresql://unused@127.0.0.1:1/x")
    try:
        response = await client.get(f"/v1/cdrs/{CDR_ID}/proof")
        assert response.status == status
        assert await response.json() == {"error": {"code": reason, "message": f"because {reason}"}}
    finally:
        await client.close()


async def test_evidence_that_disagrees_is_a_500_logged_critical(stored, caplog) -> None:
    stored["answer"] = proof_store.EvidenceMismatch("F: the stored rows give Merkle root 00…")
    client = await _portal("postgresql://unused@127.0.0.1:1/x")
    try:
        with caplog.at_level(logging.CRITICAL, logger="cdr_mediation.portal.proofs"):
            response = await client.get(f"/v1/cdrs/{CDR_ID}/proof")
        assert response.status == 500
        assert (await response.json())["error"]["code"] == "evidence_mismatch"
        assert [r.levelno for r in caplog.records if r.name == "cdr_mediation.portal.proofs"] == [logging.CRITICAL]
    finally:
        await client.close()


async def test_a_failure_nobody_expected_is_still_the_json_shape(stored) -> None:
    stored["answer"] = KeyError("checkpoint_key_id")
    client = await _portal("postgresql://unused@127.0.0.1:1/x")
    try:
        response = await client.get(f"/v1/cdrs/{CDR_ID}/proof")
        assert response.status == 500
        assert json.loads(await response.text())["error"]["code"] == "internal"
    finally:
        await client.close()


async def test_without_a_database_a_503() -> None:
    client = await _portal(None)
    try:
        response = await client.get(f"/v1/cdrs/{CDR_ID}/proof")
        assert response.status == 503 and (await response.json())["error"]["code"] == "not_configured"
    finally:
        await client.close()
    client = await _portal(f"postgresql://cdr@127.0.0.1:{free_port()}/cdr")
    try:
        response = await client.get(f"/v1/cdrs/{CDR_ID}/proof")
        assert response.status == 503 and (await response.json())["error"]["code"] == "database_unavailable"
    finally:
        await client.close()


def _regulator(request):
    return {"organizationalUnitName": ["regulator"], "commonName": ["unit-test"]}
