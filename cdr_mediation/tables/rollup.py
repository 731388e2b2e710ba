"""The rollup agent's table: one value per operator (`domain.rollup.OperatorRollupState`).

One key per operator, written once per CDR-topic record, so an operator's rollup state changes
atomically in the changelog (DESIGN.md §10). It is a plain table keyed by operator — not one of
Faust's windowed tables, which expire windows by the wall clock and would lose hours when months
of old data are replayed (ENVIRONMENT.md); hours open and close by event time inside the value.
"""

from __future__ import annotations

from cdr_mediation.domain.rollup import OperatorRollupState
from cdr_mediation.tables.durable import write_acknowledged
from cdr_mediation.topology.topics import TableSpec

ROLLUP_TABLE = TableSpec("rollup-state", key="<operator_id>", value="OperatorRollupState (JSON)")


class RollupTableView:
    def __init__(self, table) -> None:
        self.table = table

    def state(self, operator_id: str) -> OperatorRollupState:
        raw = self.table.get(operator_id)
        return OperatorRollupState.from_dict(raw) if raw else OperatorRollupState.initial(operator_id)

    async def write_state(self, state: OperatorRollupState, partition: int | None) -> None:
        await write_acknowledged(self.table, partition, state.operator_id, state.to_dict())
