"""The portal behind mutual TLS on the real stack: no certificate, a certificate of an unknown CA
and a revoked certificate are refused in the handshake; a certificate without a known role gets
403; each role gets exactly what the access table grants, on every endpoint the portal serves;
the probes answer in clear on their own port and the API never does."""

from __future__ import annotations

import datetime as dt
import json
import ssl
from pathlib import Path

import aiohttp
import pytest

from cdr_mediation.domain.access import ACCESS, Role
from cdr_mediation.stack.dev_certs import cert_pem, certificate, key_pem, write_private
from cdr_mediation.stack.portal_pki import PortalPki
from cdr_mediation.stack.process import free_port
from tests.integration.support.processes import eventually, spawn, stop

CDRMED = ["-m", "cdr_mediation.cli"]
# Requests that pass validation for every endpoint, so an allowed role never sees a 403 or 401.
PROBE_PATHS = {"/healthz": "/healthz", "/readyz": "/readyz", "/metrics": "/metrics",
               "/v1/rollups": "/v1/rollups?operator=op-alpha&from=2026-01-01T00:00:00Z&to=2026-01-01T01:00:00Z",
               "/v1/cdrs/{cdr_id}/proof": "/v1/cdrs/no-such-cdr/proof",
               "/v1/cdrs": "/v1/cdrs?limit=1", "/v1/cdrs/{cdr_id}": "/v1/cdrs/no-such-cdr",
               "/v1/exports": "/v1/exports?limit=1", "/v1/exports/{operator_id}/{day}": "/v1/exports/op-alpha/2026-01-01",
               "/v1/exports/{operator_id}/{day}/download": "/v1/exports/op-alpha/2026-01-01/download?part=zip",
               "/v1/audit": "/v1/audit?limit=1", "/v1/openapi.json": "/v1/openapi.json",
               "/v1/adjustments/{adjustment_id}": "/v1/adjustments/00000000-0000-5000-8000-000000000000"}
# Writes: a request that is refused for its content (400), never for the caller, when allowed.
# The verification names an unknown operator, so an allowed role gets a 404 and no run is made.
WRITE_PATHS = {"/v1/adjustments": ("/v1/adjustments", {}),
               "/v1/cdr/chain/verify": ("/v1/cdr/chain/verify", {"operator_id": "no-such-operator"})}


@pytest.fixture(scope="module")
def pki(stack) -> PortalPki:
    stack.settings_env()  # creates the portal PKI once
    return PortalPki(stack.state.root / "portal-pki")


@pytest.fixture(scope="module")
def portal(stack_env, tmp_path_factory):
    port, probe_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("portal") / "portal.log"
    proc = spawn([*CDRMED, "portal"], env={**stack_env, "CDR_PORTAL_PORT": str(port),
                                                           "CDR_PORTAL_PROBE_PORT": str(probe_port),
                                                           "CDR_METRICS_PORT": "0"}, log_path=log)
    yield {"api": f"https://127.0.0.1:{port}", "probes": f"http://127.0.0.1:{probe_port}", "log": log, "proc": proc}
    stop(proc)


def _client_tls(pki: PortalPki, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


async def _post(url: str, document: dict, tls: ssl.SSLContext) -> tuple[int, dict | str]:
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=document, ssl=tls, timeout=aiohttp.ClientTimeout(total=20)) as response:
            return response.status, await response.json(content_type=None)


async def _get(url: str, tls: ssl.SSLContext | None = None) -> tuple[int, dict | str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, ssl=tls if tls is not None else False,
                               timeout=aiohttp.ClientTimeout(total=20)) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text


async def _ready(portal) -> bool:
    status, _ = await _get(f"{portal['probes']}/healthz")
    return status == 200


async def _refused(url: str, tls: ssl.SSLContext) -> str:
    with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)) as refused:
        await _get(url, tls)
    return str(refused.value)


async def test_probes_answer_in_clear_and_the_api_never_does(portal, pki):
    await eventually(lambda: _ready(portal), timeout=60, what="portal probes", log=portal["log"], alive=portal["proc"])
    status, body = await _get(f"{portal['probes']}/readyz")
    assert status == 200 and body["ready"] is True
    assert (await _get(f"{portal['probes']}/v1/rollups"))[0] == 404  # the API is not on the probe port
    with pytest.raises(aiohttp.ClientError):
        await _get(portal["api"].replace("https://", "http://") + "/healthz")


async def test_no_client_certificate_is_refused_in_the_handshake(portal, pki):
    await eventually(lambda: _ready(portal), timeout=60, what="portal probes")
    await _refused(f"{portal['api']}/healthz", _client_tls(pki))


async def test_a_certificate_of_an_unknown_ca_is_refused(portal, pki, tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ec

    await eventually(lambda: _ready(portal), timeout=60, what="portal probes")
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue_ca = certificate("rogue CA", rogue_key, rogue_key, None, role="ca", organisation="rogue")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certificate("admin.rogue", key, rogue_key, rogue_ca, role="client", organisation="rogue",
                       organizational_unit="admin")
    write_private(tmp_path / "rogue.pem", cert_pem(cert), mode=0o644)
    write_private(tmp_path / "rogue.key", key_pem(key), mode=0o600)
    await _refused(f"{portal['api']}/healthz", _client_tls(pki, tmp_path / "rogue.pem", tmp_path / "rogue.key"))


async def test_a_revoked_certificate_is_refused_though_its_role_is_admin(portal, pki):
    await eventually(lambda: _ready(portal), timeout=60, what="portal probes")
    await _refused(f"{portal['api']}/healthz", _client_tls(pki, *pki.client("revoked")))
    status, _ = await _get(f"{portal['api']}/healthz", _client_tls(pki, *pki.client("admin")))
    assert status == 200  # the same role, not revoked


async def test_a_certificate_without_a_known_role_gets_403(portal, pki):
    await eventually(lambda: _ready(portal), timeout=60, what="portal probes")
    status, body = await _get(f"{portal['api']}/healthz", _client_tls(pki, *pki.client("unknown-role")))
    assert status == 403 and body["error"]["code"] == "unknown_role"


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
async def test_each_role_gets_exactly_what_the_access_table_grants(portal, pki, role):
    await eventually(lambda: _ready(portal), timeout=60, what="portal probes")
    tls = _client_tls(pki, *pki.client(role.value))
    for (method, route), allowed in sorted(ACCESS.items()):
        if method == "POST":
            assert route in WRITE_PATHS, f"add a request for {method} {route} to WRITE_PATHS"
            path, document = WRITE_PATHS[route]
            status, body = await _post(portal["api"] + path, document, tls)
        else:
            assert method == "GET" and route in PROBE_PATHS, f"add a request for {method} {route} to PROBE_PATHS"
            status, body = await _get(portal["api"] + PROBE_PATHS[route], tls)
        if role in allowed:
            assert status not in (401, 403), (route, status, body)
        else:
            assert status == 403 and body["error"]["code"] == "forbidden", (route, status, body)
