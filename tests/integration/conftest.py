"""Fixtures shared by the integration tests (the stack itself is in tests/conftest.py)."""

from __future__ import annotations

import pytest

from cdr_mediation.stack.pipeline import LocalPipeline


@pytest.fixture
def pipeline(stack_env, tmp_path):
    """`pipeline(**kwargs)` makes a `LocalPipeline` in its own namespace; every process it
    started is stopped after the test."""
    made: list[LocalPipeline] = []

    def make(**kwargs) -> LocalPipeline:
        made.append(LocalPipeline(stack_env, tmp_path, **kwargs))
        return made[-1]

    yield make
    for created in made:
        created.stop_all()
