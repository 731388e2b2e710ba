"""The cold tier's records in PostgreSQL (migration 0004): archived segments, the release of their
rows from `cdr`, and the restored copies in `cdr_restored`.

A segment is recorded and its rows released in one transaction (`record_and_release`): a
recorded segment is therefore always one whose rows have left `cdr`, and a failure at any point
leaves both tables as they were.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from cdr_mediation.domain.cdr import parse_utc
from cdr_mediation.domain.chain import ChainHead
from cdr_mediation.domain.cold_segment import SegmentManifest
from cdr_mediation.infra.postgres.cdr_store import COLUMNS, entry_row

if TYPE_CHECKING:  # the chain verifier reads cold heads without loading the S3 client
    from cdr_mediation.infra.archive import ArchivedObject


class SegmentMismatch(RuntimeError):
    """Restored rows contradict rows already restored under the same chain positions."""


@dataclasses.dataclass(frozen=True)
class ColdSegmentRecord:
    """One archived segment as recorded (the manifest bytes exactly as archived)."""

    operator_id: str
    first_seq: int
    last_seq: int
    head_hash: str
    manifest: bytes
    manifest_key: str
    segment_key: str
    retain_until: dt.datetime

    @classmethod
    def from_row(cls, row: Mapping) -> "ColdSegmentRecord":
        return cls(row["operator_id"], row["first_seq"], row["last_seq"], row["head_hash"],
                   row["manifest"].encode("utf-8"), row["manifest_key"], row["segment_key"], row["retain_until"])


_RECORD_COLUMNS = "operator_id, first_seq, last_seq, head_hash, manifest, manifest_key, segment_key, retain_until"


async def cold_head(conn, operator_id: str) -> ChainHead:
    """Where the operator's cold segments end (the genesis head if it has none): the hot rows, and
    the next segment, continue from it."""
    row = await conn.fetchrow(
        "SELECT last_seq, head_hash FROM cdr_cold_segment WHERE operator_id = $1 ORDER BY last_seq DESC LIMIT 1",
        operator_id)
    return ChainHead.genesis(operator_id) if row is None else ChainHead(operator_id, row["last_seq"],
                                                                          row["head_hash"])


async def plan_inputs(conn, operator_id: str, *, next_seq: int, window_start: dt.datetime,
                      max_rows: int) -> tuple[int, int | None]:
    """(the operator's newest stored chain_seq, the lowest chain_seq in
    [next_seq, next_seq + max_rows) whose done_at is inside the hot window or None) — the inputs
    of `cold_segment.plan_segment`. The second is found walking the primary key from next_seq,
    so it reads at most the rows that are about to be archived."""
    head_seq = await conn.fetchval("SELECT max(chain_seq) FROM cdr WHERE operator_id = $1", operator_id)
    first_recent = await conn.fetchval(
        "SELECT chain_seq FROM cdr WHERE operator_id = $1 AND chain_seq >= $2 AND chain_seq < $3 AND done_at >= $4 "
        "ORDER BY chain_seq LIMIT 1",
        operator_id, next_seq, next_seq + max_rows, window_start)
    return head_seq or 0, first_recent


async def record_and_release(conn, manifest: SegmentManifest, manifest_bytes: bytes, *, segment: ArchivedObject,
                             manifest_object: ArchivedObject) -> int:
    """Record an archived, verified segment and remove its rows from `cdr`, in one transaction.

    Returns the number of rows released (= the manifest's record_count; anything else raises
    in the database and nothing changes)."""
    async with conn.transaction():
        await conn.execute(
            """
            INSERT INTO cdr_cold_segment (operator_id, first_seq, last_seq, record_count, prev_hash, head_hash,
                done_at_min, done_at_max, manifest, manifest_key, manifest_sha256, manifest_version_id,
                segment_key, segment_sha256, segment_size, segment_version_id, retention_mode, retain_until)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
            """,
            manifest.operator_id, manifest.first_seq, manifest.last_seq, manifest.record_count, manifest.prev_hash,
            manifest.head_hash, parse_utc(manifest.done_at_min), parse_utc(manifest.done_at_max),
            manifest_bytes.decode("utf-8"), manifest_object.key, manifest_object.sha256, manifest_object.version_id,
            segment.key, segment.sha256, segment.size, segment.version_id, segment.retention_mode,
            min(segment.retain_until, manifest_object.retain_until),
        )
        return await conn.fetchval("SELECT release_cold_segment($1, $2, $3)",
                                   manifest.operator_id, manifest.first_seq, manifest.last_seq)


async def segments(conn, operator_id: str, *, from_seq: int = 1, to_seq: int | None = None) -> list[ColdSegmentRecord]:
    """The operator's segments that overlap [from_seq, to_seq], in chain order."""
    rows = await conn.fetch(
        f"SELECT {_RECORD_COLUMNS} FROM cdr_cold_segment WHERE operator_id = $1 AND last_seq >= $2 "
        "AND ($3::bigint IS NULL OR first_seq <= $3::bigint) ORDER BY first_seq",
        operator_id, from_seq, to_seq)
    return [ColdSegmentRecord.from_row(row) for row in rows]


async def cold_operators(conn) -> list[str]:
    return [r["operator_id"] for r in await conn.fetch("SELECT DISTINCT operator_id FROM cdr_cold_segment ORDER BY 1")]


async def first_hot_entry(conn, operator_id: str, after_seq: int) -> tuple[int, str] | None:
    """(chain_seq, prev_hash) of the first row in `cdr` after `after_seq`: where the hot chain
    must continue the last cold segment."""
    row = await conn.fetchrow(
        "SELECT chain_seq, prev_hash FROM cdr WHERE operator_id = $1 AND chain_seq > $2 ORDER BY chain_seq LIMIT 1",
        operator_id, after_seq)
    return None if row is None else (row["chain_seq"], row["prev_hash"])


async def restore_rows(conn, rows: Sequence[Mapping]) -> int:
    """Copy verified entries (entry + record_hash, as in a segment line) into `cdr_restored`;
    returns how many were new. The same entry again is a no-op; another entry at a restored
    chain position is a `SegmentMismatch` (nothing of the batch is stored)."""
    if not rows:
        return 0
    records = [entry_row({k: v for k, v in row.items() if k != "record_hash"}, row["record_hash"]) for row in rows]
    columns = ", ".join(COLUMNS)
    async with conn.transaction():
        await conn.execute("CREATE TEMP TABLE IF NOT EXISTS cdr_restoring (LIKE cdr_restored INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
        await conn.copy_records_to_table("cdr_restoring", records=records, columns=COLUMNS)
        status = await conn.execute(
            f"INSERT INTO cdr_restored ({columns}) SELECT {columns} FROM cdr_restoring ORDER BY operator_id, chain_seq "
            "ON CONFLICT DO NOTHING")
        clash = await conn.fetchrow(
            "SELECT i.operator_id, i.chain_seq FROM cdr_restoring i JOIN cdr_restored r USING (operator_id, chain_seq) "
            "WHERE r.record_hash <> i.record_hash LIMIT 1")
        if clash is not None:
            raise SegmentMismatch(f"{clash['operator_id']} chain_seq {clash['chain_seq']}: cdr_restored already holds "
                                  "another entry there")
    return int(status.rsplit(" ", 1)[1])
