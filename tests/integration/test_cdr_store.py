"""The CDR store against the real PostgreSQL: idempotent appends, forks refused, nothing partial."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import pytest

from cdr_mediation.domain.cdr import Cdr, DlrStatus, RecordType, format_utc
from cdr_mediation.domain.chain import ChainHead, link
from cdr_mediation.infra.postgres.cdr_store import ChainFork, append_entries, iter_chain


def _chain(operator_id: str, count: int) -> list[tuple[dict, str]]:
    """`count` linked entries of one operator, as the ingest agent emits them."""
    head, pairs = ChainHead.genesis(operator_id), []
    start = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    for n in range(count):
        moment = format_utc(start + dt.timedelta(seconds=n))
        unlinked = Cdr(
            record_type=RecordType.CDR, cdr_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{operator_id}/{n}")),
            dlr_id=f"{operator_id}-dlr-{n}", message_id=f"m-{n}", tenant_id="tenant-a", operator_id=operator_id,
            sender_id="BANKCO", msisdn="+447700900123", status=DlrStatus.DELIVERED, submitted_at=moment,
            done_at=moment, segments=1, billable=True, unit_price_minor=5, amount_minor=5, tax_minor=1,
            currency="EUR", pricing_version="p1", error_code=None, smsc_id="smsc-1", chain_seq=0,
            prev_hash="",
        )
        linked, record_hash = link(head, unlinked)
        pairs.append((linked.to_entry(), record_hash))
        head = head.advance(linked, record_hash)
    return pairs


@pytest.fixture
async def conn(stack_env):
    connection = await asyncpg.connect(stack_env["CDR_PG_DSN"])
    yield connection
    await connection.close()


async def _stored(conn, operator_id: str) -> list[dict]:
    return [row async for row in iter_chain(conn, operator_id)]


async def test_a_batch_delivered_again_is_stored_once(conn):
    operator_id = f"store-{uuid.uuid4().hex[:8]}"
    pairs = _chain(operator_id, 40)
    assert await append_entries(conn, pairs[:25]) == 25
    assert await append_entries(conn, pairs[:25]) == 0  # the same record again (at-least-once)
    assert await append_entries(conn, pairs[10:40]) == 15  # overlapping: only the new part
    stored = await _stored(conn, operator_id)
    assert [row["chain_seq"] for row in stored] == list(range(1, 41))
    assert [row["record_hash"] for row in stored] == [h for _, h in pairs]


async def test_a_contradicting_entry_is_a_fork_and_nothing_of_its_batch_is_stored(conn):
    operator_id = f"store-{uuid.uuid4().hex[:8]}"
    pairs = _chain(operator_id, 20)
    assert await append_entries(conn, pairs[:10]) == 10
    # Another chain's entry at seq 5 (different content, so a different hash), next to new entries.
    forged = {**pairs[4][0], "amount_minor": 6}
    batch = [(forged, "f" * 64)] + pairs[10:20]
    with pytest.raises(ChainFork, match=f"{operator_id} seq 5"):
        await append_entries(conn, batch)
    stored = await _stored(conn, operator_id)
    assert [row["chain_seq"] for row in stored] == list(range(1, 11)), "the fork's batch left rows behind"
    assert stored[4]["amount_minor"] == 5
