"""Restoring the ingest and rollup tables from their changelogs never moves an operator's state back."""

from __future__ import annotations

from types import SimpleNamespace

import orjson
from faust.types import Message

from cdr_mediation.domain.ingest import OperatorIngestState
from cdr_mediation.domain.rollup import OperatorRollupState
from cdr_mediation.tables import ingest, rollup
from cdr_mediation.tables.furthest import STALE_STATES, STATE_CONFLICTS
from cdr_mediation.tables.ingest import state_key

keep_furthest_states = ingest.FURTHEST_STATE.rewrite


def _count(metric, table: str = "ingest-state") -> float:
    return metric.labels(table=table)._value.get()


class PartitionStores:
    """The part of Faust's RocksDB store `keep_furthest_states` reads: one raw mapping per partition."""

    def __init__(self, held: dict[int, dict[bytes, bytes]]) -> None:
        self.held = held

    def _db_for_partition(self, partition: int) -> dict[bytes, bytes]:
        return self.held.setdefault(partition, {})


def _raw_key(operator_id: str) -> bytes:
    return orjson.dumps(state_key(operator_id))


def _state(operator_id: str, applied_offset: int, head: str = "a") -> OperatorIngestState:
    return OperatorIngestState(operator_id, applied_offset * 10, head * 64, applied_offset)


def _event(partition: int, offset: int, key: bytes, value: bytes | None):
    return SimpleNamespace(message=Message(topic="app-ingest-state-changelog", partition=partition, offset=offset,
                                           timestamp=0.0, timestamp_type=0, headers=[], key=key, value=value,
                                           checksum=None))


def _value(state: OperatorIngestState) -> bytes:
    return orjson.dumps(state.to_dict())


def _applied(events) -> dict[tuple[int, bytes], bytes | None]:
    """What Faust's store writes for the batch: the last value per key, in log order."""
    final = {}
    for event in events:
        final[(event.message.partition, event.message.key)] = event.message.value
    return final


def test_a_late_stale_state_in_the_changelog_does_not_replace_the_newer_one():
    newer, stale = _state("op-a", 60), _state("op-a", 55)
    events = [_event(3, 100, _raw_key("op-a"), _value(newer)), _event(3, 101, _raw_key("op-a"), _value(stale))]
    before = _count(STALE_STATES)
    keep_furthest_states(PartitionStores({}), events)
    assert _applied(events)[(3, _raw_key("op-a"))] == _value(newer)
    assert [e.message.offset for e in events] == [100, 101], "offsets stay, for Faust's persisted offset"
    assert _count(STALE_STATES) == before + 1


def test_the_state_already_held_in_the_store_counts():
    held = PartitionStores({2: {_raw_key("op-b"): _value(_state("op-b", 80))}})
    events = [_event(2, 7, _raw_key("op-b"), _value(_state("op-b", 70)))]
    keep_furthest_states(held, events)
    assert orjson.loads(events[0].message.value)["applied_offset"] == 80


def test_newer_states_dedup_entries_and_other_partitions_pass_unchanged():
    held = PartitionStores({0: {_raw_key("op-a"): _value(_state("op-a", 5))}})
    dedup = (orjson.dumps("op-a/dlr-1"), b'{"source_offset":6}')
    events = [
        _event(0, 1, dedup[0], dedup[1]),
        _event(0, 2, _raw_key("op-a"), _value(_state("op-a", 6))),
        _event(1, 1, _raw_key("op-a"), _value(_state("op-a", 2))),  # another partition: its own history
    ]
    originals = [e.message.value for e in events]
    keep_furthest_states(held, events)
    assert [e.message.value for e in events] == originals


def test_a_conflict_keeps_the_held_state_and_is_counted():
    first, other = _state("op-c", 9, "a"), _state("op-c", 9, "b")
    events = [_event(1, 1, _raw_key("op-c"), _value(first)), _event(1, 2, _raw_key("op-c"), _value(other))]
    before = _count(STATE_CONFLICTS), _count(STALE_STATES)
    keep_furthest_states(PartitionStores({}), events)
    assert _applied(events)[(1, _raw_key("op-c"))] == _value(first)
    assert (_count(STATE_CONFLICTS), _count(STALE_STATES)) == (before[0] + 1, before[1])


def test_a_deletion_is_left_to_faust():
    events = [_event(0, 1, _raw_key("op-a"), None)]
    keep_furthest_states(PartitionStores({}), events)
    assert events[0].message.value is None


def test_the_rollup_table_keeps_the_furthest_state_of_every_operator_key():
    key = orjson.dumps("op-r")
    newer = OperatorRollupState("op-r", last_chain_seq=40, applied_offset=12)
    stale = OperatorRollupState("op-r", last_chain_seq=31, applied_offset=9)
    events = [_event(1, 5, key, orjson.dumps(newer.to_dict())), _event(1, 6, key, orjson.dumps(stale.to_dict()))]
    before = _count(STALE_STATES, "rollup-state")
    rollup.FURTHEST_STATE.rewrite(PartitionStores({}), events)
    assert OperatorRollupState.from_dict(orjson.loads(_applied(events)[(1, key)])) == newer
    assert _count(STALE_STATES, "rollup-state") == before + 1


def test_applied_offsets_read_every_state_of_a_partition_and_skip_faust_bookkeeping(tmp_path):
    from rocksdict import AccessType, Options, Rdict

    from cdr_mediation.tables.furthest import applied_offsets

    db = Rdict(str(tmp_path / "p0.db"), Options(raw_mode=True), access_type=AccessType.read_write())
    try:
        db[b"__faust\x00offset__"] = b"812"
        db[orjson.dumps("op-b/dlr-9")] = b'{"source_offset": 99}'
        db[_raw_key("op-a")] = _value(_state("op-a", 41))
        db[_raw_key("op-b")] = _value(_state("op-b", 57))
        assert sorted(applied_offsets(db, prefix=orjson.dumps("state:")[:-1])) == [41, 57]
        del db[orjson.dumps("op-b/dlr-9")]
        assert sorted(applied_offsets(db)) == [41, 57]
    finally:
        db.close()
