"""The CDR store against the real PostgreSQL: idempotent appends, forks refused, nothing partial."""

from __future__ import annotations

import uuid

import pytest

from cdr_mediation.infra.postgres.cdr_store import ChainFork, append_entries, iter_chain
from tests.integration.support.chains import simple_chain


async def _stored(conn, operator_id: str) -> list[dict]:
    return [row async for row in iter_chain(conn, operator_id)]


async def test_a_batch_delivered_again_is_stored_once(conn):
    operator_id = f"store-{uuid.uuid4().hex[:8]}"
    pairs = simple_chain(operator_id, 40)
    assert await append_entries(conn, pairs[:25]) == 25
    assert await append_entries(conn, pairs[:25]) == 0  # the same record again (at-least-once)
    assert await append_entries(conn, pairs[10:40]) == 15  # overlapping: only the new part
    stored = await _stored(conn, operator_id)
    assert [row["chain_seq"] for row in stored] == list(range(1, 41))
    assert [row["record_hash"] for row in stored] == [h for _, h in pairs]


async def test_a_contradicting_entry_is_a_fork_and_nothing_of_its_batch_is_stored(conn):
    operator_id = f"store-{uuid.uuid4().hex[:8]}"
    pairs = simple_chain(operator_id, 20)
    assert await append_entries(conn, pairs[:10]) == 10
    # Another chain's entry at seq 5 (different content, so a different hash), next to new entries.
    forged = {**pairs[4][0], "amount_minor": 6}
    batch = [(forged, "f" * 64)] + pairs[10:20]
    with pytest.raises(ChainFork, match=f"{operator_id} seq 5"):
        await append_entries(conn, batch)
    stored = await _stored(conn, operator_id)
    assert [row["chain_seq"] for row in stored] == list(range(1, 11)), "the fork's batch left rows behind"
    assert stored[4]["amount_minor"] == 5
