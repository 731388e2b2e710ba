"""Replay: rebuild every operator's chain from the DLR topic into fresh state.

Reads each partition of the DLR topic from its first offset to the high watermark at the start
(taken from a Fetch response: Tansu's ListOffsets is unreliable), applies the same pure batch
step as the ingest agent with state in a fresh RocksDB directory, and returns each operator's
chain head. Equal heads from the live system and from a replay show that the chains are exactly
what the DLR log determines, whatever crashed and re-ran on the way.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from rocksdict import Rdict

from cdr_mediation.codecs.records import UndecodableRecord, decode_dlr_batch
from cdr_mediation.domain.chain import ChainHead
from cdr_mediation.domain.ingest import DedupEntry, OperatorIngestState, apply_batch, dedup_key
from cdr_mediation.domain.pricing import PricingSnapshot
from cdr_mediation.tables.ingest import state_key
from cdr_mediation.topology.transport import fetch_highwaters
from faust.types import TP


class _FreshState:
    """The ingest table's keys and values, in a private RocksDB that starts empty."""

    def __init__(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
        self.db = Rdict(str(path))
        self.states: dict[str, OperatorIngestState] = {}

    def state(self, operator_id: str) -> OperatorIngestState:
        return self.states.get(operator_id) or OperatorIngestState.initial(operator_id)

    def lookup(self, operator_id: str):
        def find(dlr_id: str) -> DedupEntry | None:
            raw = self.db.get(dedup_key(operator_id, dlr_id))
            return DedupEntry.from_dict(raw) if raw is not None else None

        return find

    def record(self, operator_id: str, writes, new_state: OperatorIngestState) -> None:
        for dlr_id, entry in writes.items():
            self.db[dedup_key(operator_id, dlr_id)] = entry.to_dict()
        self.db[state_key(operator_id)] = new_state.to_dict()
        self.states[operator_id] = new_state

    def close(self) -> None:
        self.db.close()


async def replay_chain_heads(
    bootstrap: str, dlr_topic: str, pricing: PricingSnapshot, work_dir: Path
) -> dict[str, ChainHead]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=8 * 1024 * 1024)
    await consumer.start()
    state = _FreshState(work_dir)
    try:
        await consumer.topics()  # loads cluster metadata, so the partitions of dlr_topic are known
        partitions = sorted(consumer.partitions_for_topic(dlr_topic) or ())
        tps = [TopicPartition(dlr_topic, p) for p in partitions]
        listed = await consumer.end_offsets(tps)
        ends = await fetch_highwaters([bootstrap], {TP(tp.topic, tp.partition): listed[tp] for tp in tps})
        for tp in tps:
            end = max(listed[tp], ends[TP(tp.topic, tp.partition)])
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            position = await consumer.position(tp)
            while position < end:
                batches = await consumer.getmany(tp, timeout_ms=1000)
                for record in batches.get(tp, []):
                    if record.offset >= end:
                        break
                    operator_id = (record.key or b"").decode("utf-8", "replace")
                    current = state.state(operator_id)
                    try:
                        raw = decode_dlr_batch(record.value)
                    except UndecodableRecord:
                        state.record(operator_id, {}, OperatorIngestState(
                            operator_id, current.chain_seq, current.head_hash, record.offset))
                        continue
                    outcome = apply_batch(current, raw, record.offset, pricing, state.lookup(operator_id))
                    if not outcome.already_applied:
                        state.record(operator_id, outcome.dedup_writes, outcome.new_state)
                position = await consumer.position(tp)
        return {op: s.head for op, s in sorted(state.states.items()) if s.chain_seq > 0}
    finally:
        state.close()
        await consumer.stop()
