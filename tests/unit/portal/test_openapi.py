"""The portal's OpenAPI document: valid OpenAPI 3.1, and exactly the operations the portal serves —
a route without documentation, or documentation without a route, fails here."""

from __future__ import annotations

from openapi_spec_validator import validate

from cdr_mediation.domain.access import ACCESS
from cdr_mediation.portal.app import create_portal
from cdr_mediation.portal.openapi import document

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def _served() -> set[tuple[str, str]]:
    app = create_portal({})
    return {(route.method, route.resource.canonical) for route in app.router.routes()
            if route.method != "HEAD" and route.resource is not None}


def _documented() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document()["paths"].items()
            for method in item if method in METHODS}


def test_the_document_is_valid_openapi_3_1():
    spec = document()
    assert spec["openapi"].startswith("3.1.")
    validate(spec)


def test_every_served_route_is_documented_and_nothing_else_is():
    documented = _documented()
    assert documented == _served(), (f"undocumented: {sorted(_served() - documented)}; "
                                     f"documented but not served: {sorted(documented - _served())}")


def test_every_operation_documents_the_error_shape_for_its_client_errors():
    spec = document()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            for status in ("400", "401", "403"):
                assert status in operation["responses"], (method, path, status)


def test_the_document_is_served_to_every_role():
    assert ("GET", "/v1/openapi.json") in ACCESS and len(ACCESS[("GET", "/v1/openapi.json")]) == 3
