"""The portal against its own OpenAPI document: schemathesis loads `/v1/openapi.json` from the
running `cdrmed portal` (real stack, mutual TLS, admin certificate), generates requests for every
documented operation — valid and invalid — and checks that none gets a 5xx and that every answer
has a documented status, content type, headers and body schema.

Bounded to a few examples per operation so the file runs in well under a minute on 2 cores; the
examples are derandomised, so a failure here replays the same way."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cdr_mediation.portal.openapi import document
from cdr_mediation.stack.portal_pki import PortalPki
from tests.integration.support.portal_data import seed
from tests.integration.support.portal_process import RunningPortal

EXAMPLES_PER_OPERATION = 25
# A chain verification without an operator recomputes every chain and checkpoint of the shared
# test database (~5 s each by the time this runs in CI): fewer examples, the same checks.
EXAMPLES = {("POST", "/v1/cdr/chain/verify"): 6}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
async def contract_portal(stack_env, tmp_path_factory):
    await seed(stack_env)  # a few CDRs, exports and audit entries for the answers to carry
    async with RunningPortal(stack_env, tmp_path_factory.mktemp("portal-contract") / "portal.log") as running:
        yield running


@pytest.fixture(scope="module")
def admin_session(stack_env) -> requests.Session:
    pki = PortalPki(Path(stack_env["CDR_PORTAL_CLIENT_CA"]).parent)
    session = requests.Session()
    session.verify = str(pki.ca_cert)
    session.cert = tuple(str(p) for p in pki.client("admin"))
    yield session
    session.close()


@pytest.fixture(scope="module")
def served_document(contract_portal, admin_session):
    """The document as the running portal serves it (not the file in the package)."""
    return schemathesis.openapi.from_url(f"{contract_portal.base}/v1/openapi.json", verify=admin_session.verify,
                                         cert=admin_session.cert, timeout=30)


def _operations() -> list[tuple[str, str]]:
    """Every documented operation, for one test each (collected from the packaged copy; the test
    itself runs against the served one)."""
    return sorted((method.upper(), path) for path, item in document()["paths"].items()
                  for method in item if method in {"get", "post", "put", "patch", "delete"})


@pytest.mark.parametrize("method, path", _operations(), ids=lambda v: v)
def test_every_operation_keeps_to_the_document(method, path, served_document, contract_portal, admin_session):
    operation = served_document[path][method]

    @settings(max_examples=EXAMPLES.get((method, path), EXAMPLES_PER_OPERATION), deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def keeps_to_the_document(case):
        # verify/cert on each call: requests lets REQUESTS_CA_BUNDLE override a session's own `verify`.
        case.call_and_validate(base_url=contract_portal.base, session=admin_session, checks=CHECKS, timeout=30,
                               verify=admin_session.verify, cert=admin_session.cert)

    keeps_to_the_document()
