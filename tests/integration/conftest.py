"""Fixtures shared by the integration tests (the stack itself is in tests/conftest.py)."""

from __future__ import annotations

import asyncpg
import pytest

from cdr_mediation.stack.pipeline import LocalPipeline
from cdr_mediation.stack.postgres import OWNER_ROLE


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


@pytest.fixture
async def conn(stack_env):
    """A connection to the stack's database as the application role."""
    connection = await asyncpg.connect(stack_env["CDR_PG_DSN"])
    yield connection
    await connection.close()


@pytest.fixture
async def owner_conn(stack):
    """A session of the schema owner (via the superuser's local socket): stronger than the app
    role, and still refused what the append-only triggers refuse."""
    connection = await stack.components["postgres"]._superuser("cdr")
    await connection.execute(f"SET ROLE {OWNER_ROLE}")
    yield connection
    await connection.close()
