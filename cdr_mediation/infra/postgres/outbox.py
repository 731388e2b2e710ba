"""The transactional outbox (migration 0006; docs/audit.md §6).

A write that must also reach Kafka (an adjustment, say) calls `enqueue` in its own transaction,
beside its business row and its audit row: the three commit together or not at all, and no
process can crash between "the database says yes" and "Kafka was told". The relay
(agents/outbox_relay.py) publishes committed rows later, in id order, and records each
publication with `mark_published` — the only change an outbox row ever takes.

Ids are assigned by the database under the audit/outbox lock, which is held to commit, so id
order is commit order: when the relay sees a row, every row with a smaller id is committed
(and visible) or rolled back (and gone).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping, Sequence

# A header the relay adds to every message: the row id, so consumers can drop a redelivery.
OUTBOX_ID_HEADER = "outbox-id"
# Sent by the insert trigger at commit; the relay listens for it instead of polling hard.
NOTIFY_CHANNEL = "cdr_outbox"
# Session-level advisory lock the active relay holds ("cdrrelay"): one publisher at a time, so
# publication order is id order. Another relay waits as a standby.
RELAY_LOCK_KEY = 7161975143079371129


class OutboxOutsideTransaction(RuntimeError):
    """enqueue was called without the transaction of the write the message belongs to."""


@dataclasses.dataclass(frozen=True)
class OutboxMessage:
    id: int
    topic: str
    key: bytes | None
    value: bytes
    headers: Mapping[str, str]
    created_at: dt.datetime

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        """The stored headers (sorted by name, so the same message always has the same headers)
        and the row id."""
        return [(name, value.encode()) for name, value in sorted(self.headers.items())] + [
            (OUTBOX_ID_HEADER, str(self.id).encode())]


async def enqueue(conn, topic: str, key: bytes | None, value: bytes,
                  headers: Mapping[str, str] | None = None) -> int:
    """Add a message in the caller's transaction; returns its id (its place in publication order).

    The id and the lock that orders it are held until the caller commits, so keep the rest of
    the transaction short once this is called."""
    if not conn.is_in_transaction():
        raise OutboxOutsideTransaction("enqueue must run inside the transaction of the write it belongs to")
    headers = dict(headers or {})
    if OUTBOX_ID_HEADER in headers:
        raise ValueError(f"header {OUTBOX_ID_HEADER!r} is the relay's")
    if not all(type(name) is str and type(text) is str for name, text in headers.items()):
        raise ValueError("outbox headers are text: name → value")
    return await conn.fetchval(
        "INSERT INTO outbox (topic, key, value, headers) VALUES ($1, $2, $3, $4::jsonb) RETURNING id",
        topic, key, value, json.dumps(headers, sort_keys=True))


async def pending(conn, *, limit: int) -> list[OutboxMessage]:
    """The oldest committed messages not published yet, in id order."""
    rows = await conn.fetch("SELECT id, topic, key, value, headers, created_at FROM outbox "
                            "WHERE published_at IS NULL ORDER BY id LIMIT $1", limit)
    return [OutboxMessage(r["id"], r["topic"], r["key"], r["value"], json.loads(r["headers"]), r["created_at"])
            for r in rows]


async def mark_published(conn, ids: Sequence[int]) -> int:
    """Record that Kafka acknowledged these messages; returns how many were newly marked."""
    if not ids:
        return 0
    status = await conn.execute("UPDATE outbox SET published_at = clock_timestamp() "
                                "WHERE id = ANY($1::bigint[]) AND published_at IS NULL", list(ids))
    return int(status.rsplit(" ", 1)[1])


async def pending_count(conn) -> int:
    return await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")


async def try_lead(conn) -> bool:
    """Become the active relay on this connection (until it closes); False if another one is."""
    return await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY)
