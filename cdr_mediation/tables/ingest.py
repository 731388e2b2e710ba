"""The ingest table: per-operator chain state and dedup entries, in ONE table.

One table means one changelog partition per source partition: its records become durable in
order, so a durable state value implies the dedup entries written before it (domain/ingest.py
explains why two tables would not be safe). Keys:

- `state:<operator_id>` → `OperatorIngestState` (chain head + last applied source offset)
- `<operator_id>/<dlr_id>` → `DedupEntry` (`domain.ingest.dedup_key`; ':' never occurs in an
  operator id … and `state:` never in a dlr key because every dedup key contains '/')
"""

from __future__ import annotations

from cdr_mediation.domain.ingest import DedupEntry, OperatorIngestState, dedup_key
from cdr_mediation.topology.topics import TableSpec

INGEST_TABLE = TableSpec("ingest-state", key="state:<operator_id> | <operator_id>/<dlr_id>",
                         value="OperatorIngestState | DedupEntry (JSON)")


def state_key(operator_id: str) -> str:
    return f"state:{operator_id}"


class IngestTableView:
    """Typed access to the Faust table (a mapping of str → JSON-able dict)."""

    def __init__(self, table) -> None:
        self.table = table

    def state(self, operator_id: str) -> OperatorIngestState:
        raw = self.table.get(state_key(operator_id))
        return OperatorIngestState.from_dict(raw) if raw else OperatorIngestState.initial(operator_id)

    def dedup_lookup(self, operator_id: str):
        def lookup(dlr_id: str) -> DedupEntry | None:
            raw = self.table.get(dedup_key(operator_id, dlr_id))
            return DedupEntry.from_dict(raw) if raw else None

        return lookup

    def record(self, operator_id: str, dedup_writes, new_state: OperatorIngestState) -> None:
        """Dedup entries first, state last (the order domain/ingest.py requires)."""
        for dlr_id, entry in dedup_writes.items():
            self.table[dedup_key(operator_id, dlr_id)] = entry.to_dict()
        self.table[state_key(operator_id)] = new_state.to_dict()
