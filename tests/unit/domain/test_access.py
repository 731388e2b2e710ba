"""The portal's access table: a role from the certificate, and who may call what."""

from __future__ import annotations

import pytest

from cdr_mediation.domain.access import ACCESS, AccessRefused, Role, authorise, role_of
from cdr_mediation.portal.app import create_portal


def test_the_role_is_the_certificates_one_organisational_unit():
    assert role_of(["regulator"]) is Role.REGULATOR


@pytest.mark.parametrize("units,code", [([], "no_role"), (["admin", "auditor"], "no_role"),
                                        (["Admin"], "unknown_role"), (["operations-intern"], "unknown_role")])
def test_no_role_is_ever_guessed(units, code):
    with pytest.raises(AccessRefused) as refused:
        role_of(units)
    assert (refused.value.status, refused.value.code) == (403, code)


def test_metrics_are_for_admins_and_auditors_not_the_regulator():
    authorise("GET", "/metrics", Role.AUDITOR)
    with pytest.raises(AccessRefused, match="role regulator may not call GET /metrics"):
        authorise("GET", "/metrics", Role.REGULATOR)


def test_an_endpoint_missing_from_the_table_is_open_to_no_one():
    for role in Role:
        with pytest.raises(AccessRefused, match="open to no role"):
            authorise("DELETE", "/v1/rollups", role)


def test_every_route_the_portal_serves_has_an_entry_in_the_table():
    app = create_portal({})
    served = {(route.method, route.resource.canonical) for route in app.router.routes()
              if route.method != "HEAD" and route.resource is not None}
    assert served and served <= set(ACCESS), f"routes without an access entry: {sorted(served - set(ACCESS))}"


def test_every_role_may_have_the_evidence_verified():
    for role in Role:
        authorise("POST", "/v1/cdr/chain/verify", role)
    with pytest.raises(AccessRefused, match="open to no role"):
        authorise("GET", "/v1/cdr/chain/verify", Role.ADMIN)
