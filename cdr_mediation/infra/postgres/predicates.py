"""A WHERE clause built from the filters a request gives, with numbered parameters.

Only the predicates given go into the statement, so the planner sees plain index conditions
instead of ``($1 IS NULL OR col = $1)`` for every optional filter; values always travel as
parameters, never as text in the SQL.
"""

from __future__ import annotations

from typing import Any


class Predicates:
    def __init__(self) -> None:
        self.conditions: list[str] = []
        self.args: list[Any] = []

    def arg(self, value: Any) -> str:
        """The placeholder of one more parameter."""
        self.args.append(value)
        return f"${len(self.args)}"

    def add(self, condition: str) -> None:
        self.conditions.append(condition)

    def where(self) -> str:
        return f" WHERE {' AND '.join(self.conditions)}" if self.conditions else ""
