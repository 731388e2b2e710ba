"""The audit log in PostgreSQL (migration 0006; domain/audit.py; docs/audit.md).

`append_audit` writes one entry *inside the caller's transaction*, so the entry commits or rolls
back with the business write it describes. It takes the audit/outbox lock (held to commit), reads
the head and the database clock after it — so two writers can never build on the same head — and
lets the domain compute the entry and its hash; the database trigger checks the linkage again.

The caller's transaction must be READ COMMITTED (PostgreSQL's default): there every statement
sees what committed before it, so the head read after the lock is the real head. Under
REPEATABLE READ or SERIALIZABLE the head would be the transaction's snapshot and appends would
fail; `append_audit` refuses such a transaction up front.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from cdr_mediation.codecs.canonical_json import canonical_bytes
from cdr_mediation.domain.audit import (
    ENTRY_KEYS,
    AuditBreakKind,
    AuditDraft,
    AuditEntry,
    AuditHead,
    AuditVerification,
    append,
    check_audit_chain,
)

COLUMNS = ENTRY_KEYS + ("entry_hash",)
# The database clock in the one form `at` takes (docs/audit.md §2), rendered by PostgreSQL itself.
_DB_NOW = """to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


class AuditOutsideTransaction(RuntimeError):
    """append_audit was called without a (READ COMMITTED) transaction to belong to."""


def new_request_id() -> str:
    """A request id for work that no request started (an agent's step, a command run)."""
    return str(uuid.uuid4())


async def append_audit(conn, *, actor: str, actor_role: str, action: str, request_id: str,
                       refs: Mapping[str, Any], detail: Mapping[str, Any]) -> AuditEntry:
    """Append one entry in the caller's transaction; returns it with its hash and place."""
    if not conn.is_in_transaction():
        raise AuditOutsideTransaction("append_audit must run inside the transaction of the write it records")
    # Validated before the lock is taken: a bad entry never holds up other writers.
    draft = AuditDraft(actor, actor_role, action, request_id, dict(refs), dict(detail))
    isolation = await conn.fetchval("SELECT current_setting('transaction_isolation')")
    if isolation != "read committed":
        raise AuditOutsideTransaction(f"append_audit needs a READ COMMITTED transaction, not {isolation}")
    await conn.execute("SELECT audit_outbox_lock()")
    # A statement of its own after the lock: its snapshot includes every append committed before.
    row = await conn.fetchrow(
        f"SELECT {_DB_NOW} AS at, h.audit_seq, h.entry_hash FROM (SELECT 1) one LEFT JOIN LATERAL ("
        "  SELECT audit_seq, entry_hash FROM audit_log ORDER BY audit_seq DESC LIMIT 1) h ON true")
    head = AuditHead.genesis() if row["audit_seq"] is None else AuditHead(row["audit_seq"], row["entry_hash"])
    entry = append(head, draft, row["at"])
    await conn.execute(
        f"INSERT INTO audit_log ({', '.join(COLUMNS)}) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9, $10)",
        entry.audit_seq, entry.at, entry.actor, entry.actor_role, entry.action, entry.request_id,
        canonical_bytes(entry.refs).decode(), canonical_bytes(entry.detail).decode(), entry.prev_hash,
        entry.entry_hash)
    return entry


def _row_to_mapping(row) -> dict[str, Any]:
    """A stored row as the verifier reads it: the entry exactly as stored plus `entry_hash`.
    No validation here: a tampered row must reach the verifier."""
    values = {key: row[key] for key in COLUMNS}
    values["refs"], values["detail"] = json.loads(row["refs"]), json.loads(row["detail"])
    return values


def _entry(values: Mapping[str, Any]) -> AuditEntry:
    return AuditEntry(**values)


async def read_audit(conn, *, action: str | None = None, actor: str | None = None,
                     refs: Mapping[str, Any] | None = None, since: str | None = None, until: str | None = None,
                     after_seq: int = 0, limit: int = 100) -> tuple[list[AuditEntry], int | None]:
    """Entries in audit_seq order matching every filter given, and the cursor for the next page
    (the last audit_seq returned; None when this page is the last).

    `refs` matches entries whose refs contain it (`{"operator_id": "op-a"}`); `since` / `until`
    are `at` strings in the log's form (`until` exclusive); `after_seq` is the cursor.
    """
    if not 1 <= limit <= 10_000:
        raise ValueError("limit must be 1..10000")
    rows = await conn.fetch(
        f"SELECT {', '.join(COLUMNS)} FROM audit_log WHERE audit_seq > $1 "
        "AND ($2::text IS NULL OR action = $2) AND ($3::text IS NULL OR actor = $3) "
        "AND ($4::jsonb IS NULL OR refs @> $4::jsonb) AND ($5::text IS NULL OR at >= $5) "
        "AND ($6::text IS NULL OR at < $6) ORDER BY audit_seq LIMIT $7",
        after_seq, action, actor, None if refs is None else json.dumps(dict(refs)), since, until, limit + 1)
    entries = [_entry(_row_to_mapping(row)) for row in rows[:limit]]
    return entries, (entries[-1].audit_seq if len(rows) > limit else None)


async def iter_audit_pages(conn, *, page: int = 10_000) -> AsyncIterator[list[dict[str, Any]]]:
    """Every stored entry in audit_seq order, a page at a time, as the verifier reads them."""
    after = 0
    while True:
        rows = await conn.fetch(f"SELECT {', '.join(COLUMNS)} FROM audit_log WHERE audit_seq > $1 "
                                "ORDER BY audit_seq LIMIT $2", after, page)
        if rows:
            yield [_row_to_mapping(row) for row in rows]
        if len(rows) < page:
            return
        after = rows[-1]["audit_seq"]


async def verify_stored_audit(conn, *, expected_head: AuditHead | None = None,
                              page: int = 10_000) -> AuditVerification:
    """Recompute the whole stored log, a page at a time (bounded memory), and report the first
    break (`AuditVerification.to_dict()` is the report; a break's `index` counts from the first
    stored entry). A removed or rewritten tail is visible only against a head recorded elsewhere:
    pass it as `expected_head` (docs/audit.md §4)."""
    head, verified = AuditHead.genesis(), 0
    async for rows in iter_audit_pages(conn, page=page):
        result = check_audit_chain(rows, start=head, expected_head=expected_head)
        fault = result.first_break
        if fault is not None and fault.kind is not AuditBreakKind.TRUNCATED:  # later pages may reach it
            fault = dataclasses.replace(fault, index=verified + fault.index)
            return AuditVerification(verified + result.verified, result.head, fault)
        head, verified = result.head, verified + result.verified
    ending = check_audit_chain([], start=head, expected_head=expected_head)  # did the rows reach it?
    return AuditVerification(verified, head, ending.first_break)
