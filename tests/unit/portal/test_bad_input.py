"""Bad input to the portal, without a server or a database: every refusal is a 4xx in the one
error shape ``{"error": {"code", "message"}}`` with a message that says what was wrong — never
aiohttp's text/plain page. (Parameters are checked before any database is asked, so an
unreachable DSN proves nothing was read.)"""

from __future__ import annotations

import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cdr_mediation.portal import cursor
from cdr_mediation.portal.app import CLIENT_MAX_SIZE, create_portal
from cdr_mediation.portal.body import json_object
from cdr_mediation.portal.errors import json_errors

UNREACHABLE = "postgresql://cdr@127.0.0.1:1/cdr"
CDR_ID = "4df915ca-f22c-5214-9542-631074267f2a"


def _admin(request):
    return {"organizationalUnitName": ["admin"], "commonName": ["unit-test"]}


@pytest.fixture
async def portal():
    client = TestClient(TestServer(create_portal({}, pg_dsn=UNREACHABLE, subject_of=_admin)))
    await client.start_server()
    yield client
    await client.close()


async def _error(response) -> dict:
    assert response.content_type == "application/json", await response.text()
    body = await response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"} and body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize("path, params, says", [
    ("/v1/cdrs", {"operatr_id": "op-a"}, "unknown parameter(s) operatr_id"),
    ("/v1/cdrs", {"limit": "0"}, "limit='0' is not an integer from 1 to 1000"),
    ("/v1/cdrs", {"limit": "1001"}, "from 1 to 1000"),
    ("/v1/cdrs", {"from": "2026-11-01T00:00:00"}, "has no UTC offset"),
    ("/v1/cdrs", {"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, "must be before"),
    ("/v1/cdrs", {"status": "delivered"}, "is not one of"),
    ("/v1/cdrs", {"msisdn": "447700900123"}, "is not an E.164 number"),
    ("/v1/cdrs", {"operator_id": "op a"}, "is not an operator id"),
    ("/v1/exports", {"day": "2026-13-01"}, "is not a day"),
    ("/v1/exports", {"state": "DONE"}, "is not one of"),
    ("/v1/exports", {"from_day": "2026-11-02", "to_day": "2026-11-01"}, "must be before"),
    ("/v1/audit", {"ref": "op-a"}, "is not KEY:VALUE"),
    ("/v1/audit", {"action": "Export"}, "action='Export' is not valid"),
    ("/v1/exports/op-a/2026-11-03/download", {}, "missing parameter part"),
    ("/v1/exports/op-a/2026-11-03/download", {"part": "key"}, "is not one of"),
    ("/v1/cdrs/" + CDR_ID, {"expand": "1"}, "unknown parameter(s) expand"),
])
async def test_bad_parameters_are_a_400_saying_which(portal, path, params, says):
    response = await portal.get(path, params=params)
    assert response.status == 400
    error = await _error(response)
    assert error["code"] == "bad_request" and says in error["message"]


async def test_a_repeated_parameter_is_refused(portal):
    response = await portal.get("/v1/cdrs?status=DELIVERED&status=EXPIRED")
    assert response.status == 400 and "given more than once" in (await _error(response))["message"]


async def test_an_msisdn_is_never_quoted_back(portal):
    response = await portal.get("/v1/cdrs", params={"msisdn": "0447700900123"})
    assert response.status == 400 and "0447700900123" not in (await _error(response))["message"]


@pytest.mark.parametrize("path", ["/v1/cdrs/not-a-uuid", f"/v1/cdrs/{CDR_ID.upper()}", "/v1/cdrs/{x}",
                                  "/v1/exports/op%20a/2026-11-03", "/v1/exports/op-a/yesterday",
                                  "/v1/exports/op-a/2026-02-30/download?part=zip"])
async def test_invalid_ids_are_a_400(portal, path):
    response = await portal.get(path)
    assert response.status == 400 and (await _error(response))["code"] == "bad_request"


@pytest.mark.parametrize("text, says", [
    ("garbage!", "does not decode"),
    ("eyJ2IjoxfQ", "not a cursor of cdrs"),  # {"v":1}
    (cursor.encode("exports", ["op-a", "2026-11-03"], {}), "not a cursor of cdrs"),
    (cursor.encode("cdrs", ["op-a", 0], {}), "not a cursor of cdrs"),
    (cursor.encode("cdrs", ["op-a", 5], {"operator_id": "op-b"}), "made for other filters"),
    ("x" * 2000, "longer than any cursor"),
])
async def test_bad_cursors_are_a_400_bad_cursor(portal, text, says):
    response = await portal.get("/v1/cdrs", params={"cursor": text})
    assert response.status == 400
    error = await _error(response)
    assert error["code"] == "bad_cursor" and says in error["message"]


async def test_a_cursor_of_the_same_filters_passes_validation(portal):
    text = cursor.encode("cdrs", ["op-a", 5], {"operator_id": "op-a", "status": "DELIVERED"})
    response = await portal.get("/v1/cdrs", params={"status": "DELIVERED", "operator_id": "op-a", "cursor": text,
                                                    "limit": "7"})
    assert (await _error(response))["code"] == "database_unavailable"  # past every check, to the database


async def test_an_unknown_route_and_a_wrong_method_are_json(portal):
    response = await portal.get("/v1/nothing-here")
    assert response.status == 404 and (await _error(response))["code"] == "not_found"
    response = await portal.post("/v1/cdrs", data=b"{}")
    assert response.status == 405 and (await _error(response))["code"] == "method_not_allowed"
    assert response.headers["Allow"] == "GET,HEAD" or "GET" in response.headers["Allow"]


# --- bodies (portal/body.py, for the writes), through the same error middleware -----------------


async def _echo(request: web.Request) -> web.Response:
    return web.json_response(await json_object(request))


@pytest.fixture
async def writes():
    app = web.Application(middlewares=[json_errors], client_max_size=CLIENT_MAX_SIZE)
    app.router.add_post("/echo", _echo)
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client
    await client.close()


@pytest.mark.parametrize("body, content_type, status, code, says", [
    (b'{"kind": "VOID",', "application/json", 400, "bad_request", "is not JSON"),
    (b'{"a": 1, "a": 2}', "application/json", 400, "bad_request", "more than once"),
    (b'[1, 2]', "application/json", 400, "bad_request", "must be a JSON object"),
    (b'\xff\xfe', "application/json", 400, "bad_request", "not UTF-8"),
    (b'{"kind": "VOID"}', "text/plain", 415, "unsupported_media_type", "must be application/json"),
    (b'kind=VOID', "application/x-www-form-urlencoded", 415, "unsupported_media_type", "not application/x-www"),
    (b'{"x": "' + b"a" * CLIENT_MAX_SIZE + b'"}', "application/json", 413, "payload_too_large", "too large"),
])
async def test_bad_bodies_are_4xx_in_the_one_shape(writes, body, content_type, status, code, says):
    response = await writes.post("/echo", data=body, headers={"Content-Type": content_type})
    assert response.status == status
    error = await _error(response)
    assert error["code"] == code and says in error["message"], error


async def test_a_good_body_passes(writes):
    response = await writes.post("/echo", data=json.dumps({"kind": "VOID"}), headers={"Content-Type": "application/json"})
    assert response.status == 200 and await response.json() == {"kind": "VOID"}


async def test_a_failure_nobody_expected_is_a_500_without_internals():
    async def broken(request):
        raise KeyError("secret internals")

    app = web.Application(middlewares=[json_errors])
    app.router.add_get("/broken", broken)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        response = await client.get("/broken")
        assert response.status == 500
        error = await _error(response)
        assert error["code"] == "internal" and "secret" not in error["message"]
    finally:
        await client.close()
