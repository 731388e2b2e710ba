"""The ingest table: per-operator chain state and dedup entries, in ONE table.

One table means one changelog partition per source partition: its records become durable in
order, so a durable state value implies the dedup entries written before it (domain/ingest.py
explains why two tables would not be safe). Keys:

- `state:<operator_id>` → `OperatorIngestState` (chain head + last applied source offset)
- `<operator_id>/<dlr_id>` → `DedupEntry` (`domain.ingest.dedup_key`; ':' never occurs in an
  operator id … and `state:` never in a dlr key because every dedup key contains '/')
- `adj:<operator_id>/<adjustment_id>` → `DedupEntry` of an adjustment request the chain has seen,
  `adjusted:<operator_id>/<cdr_id>` → `AdjustedRecord` of an adjusted original
  (`domain.ingest.applied_adjustment_key`, `adjusted_key`)

Keys and values are JSON (Faust's `json` codec for a `str`-typed key and an untyped value; the
bytes are orjson's). The state, one value per batch, is written through the Faust table. The
dedup entries — one per accepted DLR — are written in bulk (`write_dedup`): one RocksDB write
batch locally and one Kafka record batch to the changelog partition, holding exactly the keys and
values Faust would have written one by one. That keeps the changelog, recovery and standbys
unchanged while replacing ~1,000 Faust sends (each a message object, two serialisations, a
callback and a persisted-offset write) by one produce. The agent waits for that record batch to
be acknowledged before it writes the state, so a state in the changelog always comes after the
dedup entries it vouches for — a stronger ordering than Faust's fire-and-forget table sends.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import faust
import orjson

from cdr_mediation.domain.ingest import DedupEntry, OperatorIngestState, dedup_key
from cdr_mediation.domain.source_position import resume_offset
from cdr_mediation.tables.furthest import FurthestStateRule, applied_offsets
from cdr_mediation.tables.durable import write_acknowledged
from cdr_mediation.topology.topics import TableSpec

INGEST_TABLE = TableSpec("ingest-state", key="state:<operator_id> | <operator_id>/<dlr_id>",
                         value="OperatorIngestState | DedupEntry (JSON)")


STATE_PREFIX = "state:"
# How state keys begin in RocksDB and in the changelog (JSON strings: a quote, then the text).
_RAW_STATE_PREFIX = orjson.dumps(STATE_PREFIX)[:-1]


def state_key(operator_id: str) -> str:
    return f"{STATE_PREFIX}{operator_id}"


def _json(value) -> bytes:
    """What Faust's json codec writes for our keys (str) and values (flat dicts of str/int)."""
    return orjson.dumps(value)


class IngestTable(faust.Table):
    """The ingest table; a restore keeps each operator's furthest state (`tables/furthest.py`):
    applied last-write-wins, a late stale state would move the operator's chain head back while
    the partition resumes after it, and the next batch would chain from a stale head — a fork."""

    def apply_changelog_batch(self, batch: Iterable) -> None:
        events = list(batch)
        FURTHEST_STATE.rewrite(self.data, events)
        super().apply_changelog_batch(events)


FURTHEST_STATE = FurthestStateRule(table="ingest-state", is_state_key=lambda key: key.startswith(_RAW_STATE_PREFIX),
                                   load=OperatorIngestState.from_dict)


class IngestTableView:
    """Typed access to the Faust table (a mapping of str → JSON-able dict)."""

    def __init__(self, table, app=None) -> None:
        self.table = table
        self.app = app
        if (table.key_serializer, table.value_serializer) != ("json", "json"):
            raise ValueError("the ingest table must use the json codec for keys and values")

    def state(self, operator_id: str) -> OperatorIngestState:
        raw = self.table.get(state_key(operator_id))
        return OperatorIngestState.from_dict(raw) if raw else OperatorIngestState.initial(operator_id)

    def _partition_db(self, partition: int):
        """The RocksDB of one table partition, or None when the store is not Faust's RocksDB
        store (then every access goes through the table API)."""
        db_for = getattr(self.table.data, "_db_for_partition", None)
        return db_for(partition) if db_for is not None and self.app is not None else None

    def dedup_lookup(self, operator_id: str, partition: int | None = None):
        """`dlr_id → DedupEntry | None` for `apply_batch`. Reads the partition's RocksDB directly
        (the key Faust's store would read for the current event), without Faust's per-key
        serialiser lookups."""
        db = self._partition_db(partition) if partition is not None else None
        if db is None:
            def lookup(dlr_id: str) -> DedupEntry | None:
                raw = self.table.get(dedup_key(operator_id, dlr_id))
                return DedupEntry.from_dict(raw) if raw else None

            return lookup

        def raw_lookup(dlr_id: str) -> DedupEntry | None:
            raw = db.get(_json(dedup_key(operator_id, dlr_id)))
            return DedupEntry.from_dict(orjson.loads(raw)) if raw is not None else None

        return raw_lookup

    def lookup(self, partition: int | None = None):
        """`full key → value (JSON dict) | None`, for `domain.ingest.apply_adjustment`."""
        db = self._partition_db(partition) if partition is not None else None
        if db is None:
            return lambda key: self.table.get(key)

        def raw_lookup(key: str):
            raw = db.get(_json(key))
            return orjson.loads(raw) if raw is not None else None

        return raw_lookup

    async def write_dedup(self, operator_id: str, partition: int | None,
                          dedup_writes: Mapping[str, DedupEntry]) -> list:
        """Write the dedup entries locally and send them to the changelog; returns the futures
        of their Kafka acknowledgements (the caller awaits them before `write_state`)."""
        return await self.write_entries(partition, {dedup_key(operator_id, dlr_id): entry.to_dict()
                                                    for dlr_id, entry in dedup_writes.items()})

    async def write_entries(self, partition: int | None, writes: Mapping[str, dict]) -> list:
        """`write_dedup` for entries under full keys (dedup entries, and the adjustment entries
        of `domain.ingest.apply_adjustment`)."""
        if not writes:
            return []
        db = self._partition_db(partition) if partition is not None else None
        if db is None:
            for key, value in writes.items():
                self.table[key] = value
            return []
        from rocksdict import WriteBatch

        records = [(_json(key), _json(value)) for key, value in writes.items()]
        local = WriteBatch(raw_mode=True)
        for key, value in records:
            local.put(key, value)
        db.write(local)
        return await self._send_changelog(partition, records)

    async def _send_changelog(self, partition: int, records: list[tuple[bytes, bytes]]) -> list:
        producer = self.app.producer._ensure_producer()  # the producer Faust's table sends use
        topic = self.table.changelog_topic.get_topic_name()
        futures = []
        builder = producer.create_batch()
        for key, value in records:
            if builder.append(key=key, value=value, timestamp=None) is None:  # batch full
                futures.append(await self._submit(producer, builder, topic, partition))
                builder = producer.create_batch()
                if builder.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"dedup record of {len(key) + len(value)} bytes exceeds the producer batch size")
        futures.append(await self._submit(producer, builder, topic, partition))
        return futures

    @staticmethod
    async def _submit(producer, builder, topic: str, partition: int):
        # Closed, so that no other send joins this record batch: its acknowledgement then covers
        # exactly these dedup records.
        builder.close()
        return await producer.send_batch(builder, topic, partition=partition)

    def resume_offset(self, partition: int) -> int | None:
        """Where processing of the source partition resumes (`domain.source_position`), or
        None while the partition's store is not open in this worker (then nothing is known)."""
        db = self.table.data._dbs.get(partition)
        if db is None:
            return None
        offsets = applied_offsets(db, prefix=_RAW_STATE_PREFIX)
        return resume_offset(offsets)

    async def write_state(self, operator_id: str, new_state: OperatorIngestState, partition: int | None = None) -> None:
        """Write the state and return once Kafka acknowledged it (`tables/durable.py`)."""
        await write_acknowledged(self.table, partition, state_key(operator_id), new_state.to_dict())

    def record(self, operator_id: str, dedup_writes, new_state: OperatorIngestState) -> None:
        """Dedup entries first, state last, all through the table API (the order domain/ingest.py
        requires; the slow path, kept for callers without a partition at hand)."""
        for dlr_id, entry in dedup_writes.items():
            self.table[dedup_key(operator_id, dlr_id)] = entry.to_dict()
        self.table[state_key(operator_id)] = new_state.to_dict()
