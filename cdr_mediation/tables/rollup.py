"""The rollup agent's table: one value per operator (`domain.rollup.OperatorRollupState`).

One key per operator, written once per CDR-topic record, so an operator's rollup state changes
atomically in the changelog (DESIGN.md §10). It is a plain table keyed by operator — not one of
Faust's windowed tables, which expire windows by the wall clock and would lose hours when months
of old data are replayed (ENVIRONMENT.md); hours open and close by event time inside the value.
"""

from __future__ import annotations

from collections.abc import Iterable

import faust

from cdr_mediation.domain.rollup import OperatorRollupState
from cdr_mediation.domain.source_position import resume_offset
from cdr_mediation.tables.durable import write_acknowledged
from cdr_mediation.tables.furthest import FurthestStateRule, applied_offsets
from cdr_mediation.topology.topics import TableSpec

ROLLUP_TABLE = TableSpec("rollup-state", key="<operator_id>", value="OperatorRollupState (JSON)")


class RollupTable(faust.Table):
    """The rollup table; a restore keeps each operator's furthest state (`tables/furthest.py`):
    applied last-write-wins, a late stale state would move an operator's rollup back while the
    partition resumes after it, and the next record would meet a gap in the chain."""

    def apply_changelog_batch(self, batch: Iterable) -> None:
        events = list(batch)
        FURTHEST_STATE.rewrite(self.data, events)
        super().apply_changelog_batch(events)


FURTHEST_STATE = FurthestStateRule(table="rollup-state", is_state_key=lambda key: True,
                                   load=OperatorRollupState.from_dict)


class RollupTableView:
    def __init__(self, table) -> None:
        self.table = table

    def resume_offset(self, partition: int) -> int | None:
        """Where the CDR-topic partition resumes (`domain/source_position.py`), or None while the
        partition's store is not open in this worker."""
        db = self.table.data._dbs.get(partition)
        return None if db is None else resume_offset(applied_offsets(db))

    def state(self, operator_id: str) -> OperatorRollupState:
        raw = self.table.get(operator_id)
        return OperatorRollupState.from_dict(raw) if raw else OperatorRollupState.initial(operator_id)

    async def write_state(self, state: OperatorRollupState, partition: int | None) -> None:
        await write_acknowledged(self.table, partition, state.operator_id, state.to_dict())
