"""`POST /v1/cdr/chain/verify` (portal/verify.py) without PostgreSQL: what the body may be, the one
error shape, and the answer when nothing is configured (the run on the real database, over real
mutual TLS: tests/integration/test_verifier.py)."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from cdr_mediation.portal.app import create_portal
from cdr_mediation.portal.errors import ApiError
from cdr_mediation.portal.verify import parse_verify_request

JSON = "application/json"


@pytest.mark.parametrize("body", [b"", b"  \n"])
def test_an_empty_body_asks_for_every_operator(body):
    assert parse_verify_request("", body) is None
    assert parse_verify_request("text/plain", body) is None


def test_a_json_body_names_one_operator():
    assert parse_verify_request(JSON, b'{"operator_id": "op-a_1"}') == "op-a_1"
    assert parse_verify_request(JSON, b"{}") is None


@pytest.mark.parametrize("body,words", [
    (b'{"operator_id": "op-a", "day": "2026-11-03"}', "unknown member(s) 'day'"),
    (b'{"operator": "op-a"}', "unknown member(s) 'operator'"),
    (b'["op-a"]', "must be a JSON object"),
    (b'{"operator_id": 7}', "is not an operator id"),
    (b'{"operator_id": "op.a"}', "is not an operator id"),
    (b'{"operator_id": ""}', "is not an operator id"),
    (b'{"operator_id": "a", "operator_id": "b"}', "not valid JSON"),
    (b'{"operator_id": ', "not valid JSON"),
])
def test_anything_else_is_a_400(body, words):
    with pytest.raises(ApiError) as refused:
        parse_verify_request(JSON, body)
    assert (refused.value.status, refused.value.code) == (400, "bad_request")
    assert words in refused.value.message


def test_a_body_that_is_not_json_is_a_415():
    with pytest.raises(ApiError) as refused:
        parse_verify_request("application/x-www-form-urlencoded", b"operator_id=op-a")
    assert (refused.value.status, refused.value.code) == (415, "unsupported_media_type")


def _auditor(request):
    return {"commonName": ["auditor-1"], "organizationalUnitName": ["auditor"]}


async def _post(pg_dsn: str | None, **kwargs) -> tuple[int, dict]:
    client = TestClient(TestServer(create_portal({}, pg_dsn=pg_dsn, subject_of=_auditor)))
    await client.start_server()
    try:
        response = await client.post("/v1/cdr/chain/verify", **kwargs)
        return response.status, await response.json()
    finally:
        await client.close()


async def test_the_errors_take_the_portals_one_shape():
    status, body = await _post("postgresql://unused@127.0.0.1:1/x", json={"operator_id": "op-a", "extra": 1})
    assert status == 400 and body["error"]["code"] == "bad_request"
    status, body = await _post("postgresql://unused@127.0.0.1:1/x", data=b"x" * 5000,
                               headers={"Content-Type": JSON})
    assert status == 413 and body["error"]["code"] == "body_too_large"


async def test_without_a_database_or_a_trust_anchor_nothing_is_run():
    status, body = await _post(None)
    assert status == 503 and body["error"]["code"] == "not_configured"
    status, body = await _post("postgresql://unused@127.0.0.1:1/x")  # no CDR_HSM_CA_CERT given
    assert status == 503 and "CDR_HSM_CA_CERT" in body["error"]["message"]
