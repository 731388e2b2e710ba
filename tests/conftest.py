"""Shared fixtures: the real local stack, started once per test session by the project's own code."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

# CI replays the same examples every run (a failure there blocks a landing and must be
# reproducible); developers' runs keep exploring new examples, which is how bugs are found.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("CDR_SHARED_DIR", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return SHARED_DIR


@pytest.fixture(scope="session")
def stack():
    """All seven components up in a state directory of the test session's own; torn down after.

    The directory is inside the repository (not /tmp/pytest-of-root, which is private to root)
    so the `postgres` OS user can reach its cluster, as in `cdrmed stack up`.
    `CDRMED_TEST_STACK_DIR` moves it, e.g. for a second session beside a running one (test-only
    variables are not `CDR_*`: the settings refuse unknown `CDR_*` names, and spawned processes
    inherit the environment).
    """
    from cdr_mediation.stack import Stack

    state_dir = Path(os.environ.get("CDRMED_TEST_STACK_DIR", REPO_ROOT / ".stack-test"))
    Stack(state_dir).down()  # a previous session that crashed may have left daemons behind
    shutil.rmtree(state_dir, ignore_errors=True)
    test_stack = Stack(state_dir)
    test_stack.up()
    yield test_stack
    test_stack.down()


@pytest.fixture(scope="session")
def stack_env(stack) -> dict[str, str]:
    """CDR_* settings pointing at the test stack (what `cdrmed stack env` prints)."""
    return {**stack.settings_env(), "CDR_ENVIRONMENT": "test"}
