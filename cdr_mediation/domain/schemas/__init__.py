"""Published contracts, shipped with the package so contract tests and tools read the same file."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def dlr_v1_schema() -> dict[str, Any]:
    """The DLR v1 JSON Schema (draft 2020-12) that dlr-processor validates against."""
    return json.loads(resources.files(__name__).joinpath("dlr.v1.schema.json").read_text("utf-8"))
