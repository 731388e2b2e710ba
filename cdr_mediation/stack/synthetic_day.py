"""One operator's synthetic day of chained CDRs in PostgreSQL, for `cdrmed bench export`.

The rows are what the ingest and store agents would have stored for that traffic: synthetic DLR
documents (`domain/synthetic.py`) parsed and priced by the production code (`domain/dlr.py`,
`domain/projection.py`), placed in the operator's chain (`domain/chain.py`) and appended with the
store agent's COPY (`infra/postgres/cdr_store.append_rows`). `done_at` is spread evenly over the
UTC day `DAY`, so every row belongs to that day's export.

Loading is not what the benchmark measures, but ten million rows must take minutes, not an
hour: parsing and pricing cost ~70 µs per DLR here and the chain ~35 µs, one after the other.
The day is therefore cut into blocks of `BLOCK` DLRs, each generated from a seed of its own, so
helper processes parse and price blocks in parallel while this process chains them in order (a
chain is sequential by definition) and one block's COPY overlaps the chaining of the next.

The `cdr` table is append-only and a day of ten million rows takes minutes to load, so a loaded
day is used again: the operator id is `bench-<records>`, and a chain found under it is kept
(completed if an earlier load was interrupted) when its first entry is the one this code
generates. A chain made by other code (the generator changed) is left alone and the next id,
`bench-<records>-2`, … is taken. The generator is deterministic, so rows loaded by two runs
of the same code are the same rows.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import datetime as dt
import functools
import itertools
import json
import multiprocessing
import os

import asyncpg
import orjson

from cdr_mediation.domain.chain import ChainHead, next_position, record_hash
from cdr_mediation.domain.dlr import parse_dlr
from cdr_mediation.domain.pricing import PricingSnapshot, load_snapshot
from cdr_mediation.domain.projection import project
from cdr_mediation.domain.synthetic import synthetic_dlrs
from cdr_mediation.infra.postgres.cdr_store import append_rows, entry_row
from cdr_mediation.stack.pipeline import pricing_document

DAY = dt.date(2026, 11, 21)
BLOCK = 50_000  # DLRs per generated block: one COPY, a few MB of rows
SEED = 11
MAX_RECORDS = 86_400_000  # one per millisecond of the day (`synthetic_dlrs` spaces whole milliseconds)
_AHEAD = 1  # blocks generated beyond one per helper (bounds the loader's memory)
_DAY_START = dt.datetime.combine(DAY, dt.time(), tzinfo=dt.timezone.utc)


@dataclasses.dataclass(frozen=True)
class SyntheticDay:
    operator_id: str
    day: str  # YYYY-MM-DD
    records: int
    head: ChainHead  # the chain's last entry: the day's last record
    loaded: int  # rows this call appended (0: the day was already stored)


def operator_id_for(records: int, attempt: int = 1) -> str:
    return f"bench-{records}" if attempt == 1 else f"bench-{records}-{attempt}"


@functools.lru_cache(maxsize=8)
def _pricing(operator_id: str) -> PricingSnapshot:
    return load_snapshot(json.dumps(pricing_document([operator_id])).encode())


def _spacing_ms(records: int) -> int:
    return 86_400_000 // records


def projected_entries(operator_id: str, records: int, block: int, *, block_size: int = BLOCK,
                      limit: int | None = None) -> list[dict]:
    """The unlinked entries of block `block` (at most `limit` of them), as the ingest step makes
    them: each synthetic DLR goes through its JSON bytes, `parse_dlr` and `project`.

    Entries, not `Cdr` objects, cross from the helper processes: a dict of plain values pickles
    in C, a frozen dataclass field by field (15 µs a record here, measured)."""
    first = block * block_size
    count = min(block_size, records - first, limit or block_size)
    spacing = _spacing_ms(records)
    pricing = _pricing(operator_id)
    documents = synthetic_dlrs(seed=SEED + block, start=_DAY_START + dt.timedelta(milliseconds=first * spacing),
                               count=count, spacing_ms=spacing, operators=(operator_id,),
                               id_prefix=f"{operator_id}-b{block:05d}")
    return [project(parse_dlr(orjson.dumps(document)), pricing).to_entry() for document in documents]


def chained_rows(head: ChainHead, entries: list[dict]) -> tuple[list[list], ChainHead]:
    """`entries` (unlinked) placed after `head` in order, as `chain.link` places a CDR: the rows
    to store and the new head."""
    rows = []
    operator_id = head.operator_id
    for entry in entries:
        chain_seq, prev_hash = next_position(head)
        entry["chain_seq"], entry["prev_hash"] = chain_seq, prev_hash
        digest = record_hash(entry)
        rows.append(entry_row(entry, digest))
        head = ChainHead(operator_id, chain_seq, digest)
    return rows, head


async def load_day(dsn: str, records: int, *, helpers: int | None = None, block_size: int = BLOCK) -> SyntheticDay:
    """Make sure `records` chained CDRs of one bench operator are stored for `DAY`; see the
    module docstring for which operator, and when rows already stored are used.

    `block_size` is part of what the rows are (each block has its own seed): tests load small
    days in small blocks, and a day must always be completed with the size it was begun with."""
    if not 1 <= records <= MAX_RECORDS:
        raise ValueError(f"records must be within 1..{MAX_RECORDS}")
    conn = await asyncpg.connect(dsn)
    try:
        operator_id, stored = await _operator_to_fill(conn, records, block_size)
        head = stored
        if stored.chain_seq < records:
            head = await _append(conn, stored, records, helpers or os.cpu_count() or 1, block_size)
        return SyntheticDay(operator_id, DAY.isoformat(), records, head, head.chain_seq - stored.chain_seq)
    finally:
        await conn.close()


async def _operator_to_fill(conn, records: int, block_size: int) -> tuple[str, ChainHead]:
    """The first bench operator id for `records` that holds no chain or one this code made, and
    where its stored chain ends."""
    for attempt in itertools.count(1):
        operator_id = operator_id_for(records, attempt)
        stored = await conn.fetchrow(
            "SELECT chain_seq, record_hash FROM cdr WHERE operator_id = $1 ORDER BY chain_seq DESC LIMIT 1",
            operator_id)
        if stored is None:
            return operator_id, ChainHead.genesis(operator_id)
        _, first = chained_rows(ChainHead.genesis(operator_id),
                                projected_entries(operator_id, records, 0, block_size=block_size, limit=1))
        stored_first = await conn.fetchval("SELECT record_hash FROM cdr WHERE operator_id = $1 AND chain_seq = 1",
                                           operator_id)
        if stored_first == first.head_hash and stored["chain_seq"] <= records:
            return operator_id, ChainHead(operator_id, stored["chain_seq"], stored["record_hash"])
    raise AssertionError("unreachable")


async def _append(conn, head: ChainHead, records: int, helpers: int, block_size: int) -> ChainHead:
    """Append the day's entries after `head` (the rows an interrupted load stored are skipped);
    returns the new head."""
    stored = head.chain_seq
    blocks = iter(range(stored // block_size, -(-records // block_size)))
    # Fresh interpreters (spawn): a fork would copy this process, event loop and connection included.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(helpers, mp_context=context) as pool:
        in_flight: collections.deque = collections.deque()

        def submit_next() -> None:
            block = next(blocks, None)
            if block is not None:
                in_flight.append((block, pool.submit(projected_entries, head.operator_id, records, block,
                                                     block_size=block_size)))

        for _ in range(helpers + _AHEAD):
            submit_next()
        copying: asyncio.Task | None = None
        while in_flight:
            block, future = in_flight.popleft()
            unlinked = (await asyncio.wrap_future(future))[max(0, stored - block * block_size):]
            submit_next()
            # Chained in a thread so that the previous block's COPY keeps streaming meanwhile.
            rows, head = await asyncio.to_thread(chained_rows, head, unlinked)
            if copying is not None:
                await copying
            copying = asyncio.create_task(append_rows(conn, rows))
        if copying is not None:
            await copying
    return head
