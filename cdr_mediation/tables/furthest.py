"""Restoring a table from its changelog without ever moving a state back.

Faust applies changelog records in log order, the last write of a key winning. Without Kafka
transactions nothing fences a worker that lost its partition and has not noticed yet: it can
append an older state after the new owner's newer one. Applied as is, that key's state would move
back while the partition resumes after it (`domain/source_position.py`), and the next record
would be applied to stale state. Our states record the source offset they reflect
(`applied_offset`), so the tables choose the furthest state instead
(`domain.source_position.furthest`). This runs for restores of active partitions and for standbys alike: both go
through `Table.apply_changelog_batch`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from prometheus_client import Counter

from cdr_mediation.domain.source_position import StateConflict, furthest

log = logging.getLogger(__name__)

STALE_STATES = Counter("cdr_table_stale_states_ignored_total",
                       "States read from a changelog that were behind the state already held (sent late by "
                       "a worker that had lost the partition)", ["table"])
STATE_CONFLICTS = Counter("cdr_table_state_conflicts_total",
                          "Two different states of one key at one source offset in a changelog (a fork)",
                          ["table"])


@dataclasses.dataclass(frozen=True)
class FurthestStateRule:
    table: str
    is_state_key: Callable[[bytes], bool]  # raw changelog key → is it a state with applied_offset?
    load: Callable[[Mapping[str, Any]], Any]  # JSON value → the domain state

    def rewrite(self, store, events: list) -> None:
        """Rewrite, in place, every state record of `events` that is behind the state held for its
        key (in the store, or earlier in the batch) to that held state, so that applying the
        batch never moves a state back. Rewriting instead of dropping keeps Faust's bookkeeping
        of changelog offsets (the persisted offset) exactly as for the records it read."""
        held: dict[tuple[int, bytes], tuple[Any, bytes]] = {}
        for event in events:
            message = event.message
            if message.value is None or not message.key or not self.is_state_key(message.key):
                continue
            slot = (message.partition, message.key)
            if slot not in held:
                raw = store._db_for_partition(message.partition).get(message.key)
                if raw is not None:
                    held[slot] = (self.load(orjson.loads(raw)), raw)
            incoming = self.load(orjson.loads(message.value))
            current = held.get(slot)
            source = f"changelog:{self.table}:{message.partition}:{message.offset}"
            try:
                kept = furthest(current[0] if current else None, incoming)
            except StateConflict as conflict:
                STATE_CONFLICTS.labels(table=self.table).inc()
                log.critical("state conflict in a changelog; keeping the state held",
                             extra={"error": str(conflict), "source": source})
                message.value = current[1]
                continue
            if kept is incoming:
                held[slot] = (incoming, message.value)
            else:
                STALE_STATES.labels(table=self.table).inc()
                log.warning("a stale state in a changelog was not applied",
                            extra={"table": self.table, "stale_applied_offset": incoming.applied_offset,
                                   "held_applied_offset": kept.applied_offset, "source": source})
                message.value = current[1]


def applied_offsets(db, *, prefix: bytes = b"") -> list[int]:
    """`applied_offset` of every state in one partition's RocksDB whose raw key starts with
    `prefix` (all keys when empty; Faust's own bookkeeping keys are not JSON strings and are
    skipped)."""
    offsets = []
    for key, value in db.items(from_key=prefix) if prefix else db.items():
        if prefix and not key.startswith(prefix):
            break
        if not key.startswith(b'"'):
            continue
        offsets.append(orjson.loads(value)["applied_offset"])
    return offsets
