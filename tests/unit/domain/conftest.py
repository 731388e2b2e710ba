"""Fixtures for the pure domain tests: one pricing snapshot and a DLR builder."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest

from cdr_mediation.domain.pricing import PricingSnapshot, load_snapshot
from .domain_samples import PRICING_DOC, dlr_doc


@pytest.fixture(scope="session")
def pricing() -> PricingSnapshot:
    return load_snapshot(json.dumps(PRICING_DOC).encode())


@pytest.fixture(scope="session")
def pricing_doc() -> dict[str, Any]:
    return json.loads(json.dumps(PRICING_DOC))  # a private deep copy


@pytest.fixture(scope="session")
def make_doc() -> Callable[..., dict[str, Any]]:
    return dlr_doc


@pytest.fixture(scope="session")
def make_dlr() -> Callable[..., bytes]:
    """Raw DLR bytes as dlr-processor would send them."""
    return lambda **changes: json.dumps(dlr_doc(**changes)).encode()
