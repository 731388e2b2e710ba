"""Where a worker resumes a source partition: decided by its table, not by the committed offset.

A table whose states each record the source offset of the last record applied to them
(`applied_offset`) reflects every record of the partition up to the largest of those offsets:
each processed record writes its key's state with its own offset, and records are processed in
offset order without gaps. The committed consumer offset says only which records were
acknowledged. It runs ahead of the table when a restore missed the newest changelog records, and
resuming there would apply the next records to stale state: a fork of the ingest chain, a gap in
a rollup. Resuming at the table's position re-delivers records the table already reflects, which
every consumer of ours skips or absorbs by key.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar

NOTHING_APPLIED = -1


class HasAppliedOffset(Protocol):
    applied_offset: int


State = TypeVar("State", bound=HasAppliedOffset)


class StateConflict(ValueError):
    """Two different states of one key at one source offset: they were built from different
    input (processing is deterministic), i.e. a fork already happened upstream."""


def resume_offset(applied_offsets: Iterable[int]) -> int:
    """The first offset of the partition the table does not reflect (0 for an empty table)."""
    return max(applied_offsets, default=NOTHING_APPLIED) + 1


def furthest(held: State | None, incoming: State) -> State:
    """Of two states of one key (an operator's ingest or rollup state), the one further along
    the source partition.

    A table partition can receive an older state after a newer one: a worker that lost its
    partition in a rebalance but has not noticed yet (there is no fencing without Kafka
    transactions) still sends the states of the records it finishes. Every worker applies the
    same records in the same order, so all states of a key lie on one path, ordered by
    ``applied_offset``; keeping the furthest is exact. Letting the last write win instead would
    move the state back while the partition resumes after it (`resume_offset`), and the next
    record would be applied to stale state: a fork of the ingest chain, a gap in a rollup.
    """
    if held is None or incoming.applied_offset > held.applied_offset:
        return incoming
    if incoming.applied_offset < held.applied_offset:
        return held
    if incoming != held:
        raise StateConflict(f"{getattr(incoming, 'operator_id', '?')}: two different states at source offset "
                            f"{incoming.applied_offset}")
    return held
