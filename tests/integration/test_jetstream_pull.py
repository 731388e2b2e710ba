"""`infra/jetstream_pull.PullBatches` against the real JetStream server of the stack."""

from __future__ import annotations

import asyncio
import uuid

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from cdr_mediation.infra.jetstream_pull import PullBatches
from cdr_mediation.infra.nats import ensure_pull_consumer
from tests.integration.support.processes import eventually


@pytest.fixture
async def jetstream(stack_env):
    nc = await nats.connect(stack_env["CDR_NATS_URL"])
    js = nc.jetstream()
    stream = f"P{uuid.uuid4().hex[:8]}"
    await js.add_stream(name=stream, subjects=[f"{stream}.>"])
    yield nc, js, stream
    await js.delete_stream(stream)
    await nc.close()


async def _puller(nc, js, stream: str, *, max_batch: int = 100, ack_wait: float = 30.0) -> PullBatches:
    await ensure_pull_consumer(js, stream, ConsumerConfig(
        durable_name="bridge", filter_subject=f"{stream}.>", ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL, ack_wait=ack_wait, max_ack_pending=max_batch * 4))
    puller = PullBatches(nc, stream, "bridge", max_batch=max_batch)
    await puller.start()
    return puller


async def _publish(js, stream: str, count: int, start: int = 0) -> list[bytes]:
    bodies = [f"m{n:05d}".encode() for n in range(start, start + count)]
    for body in bodies:
        await js.publish(f"{stream}.op", body)
    return bodies


async def _drain(puller: PullBatches, expected: int, *, ack: bool = True) -> list[list]:
    batches: list[list] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while sum(len(b) for b in batches) < expected and loop.time() < deadline:
        batch = await puller.gather(wait_s=1.0, linger_s=0.02)
        if ack:
            for message in batch:
                await message.ack()
        if batch:
            batches.append(batch)
    return batches


async def test_every_message_once_in_stream_order_in_bounded_batches_and_all_acked(jetstream):
    nc, js, stream = jetstream
    bodies = await _publish(js, stream, 1_050)
    puller = await _puller(nc, js, stream, max_batch=100)
    try:
        batches = await _drain(puller, len(bodies))
        assert [m.data for b in batches for m in b] == bodies
        assert max(len(b) for b in batches) == 100
        # The server applies acks asynchronously (JetStream's own queue): wait until it has.
        async def all_acked():
            info = await js.consumer_info(stream, "bridge")
            return (info.num_ack_pending, info.num_pending) == (0, 0)

        await eventually(all_acked, timeout=10, what="every delivered message acked, none pending")
    finally:
        await puller.stop()


async def test_an_idle_stream_yields_an_empty_batch_after_the_wait_and_later_messages_still_come(jetstream):
    nc, js, stream = jetstream
    puller = await _puller(nc, js, stream)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await puller.gather(wait_s=0.3, linger_s=0.01) == []
        assert loop.time() - started >= 0.29
        # The request that expired meanwhile does not keep later messages from coming.
        await asyncio.sleep(0)  # let the 408 of the expired request arrive if it has
        bodies = await _publish(js, stream, 3)
        assert [m.data for b in await _drain(puller, 3) for m in b] == bodies
    finally:
        await puller.stop()


async def test_the_linger_gathers_what_arrives_meanwhile_into_one_batch(jetstream):
    nc, js, stream = jetstream
    puller = await _puller(nc, js, stream)
    try:
        await _publish(js, stream, 1)

        async def trickle():
            await _publish(js, stream, 4, start=1)

        publisher = asyncio.create_task(trickle())
        batch = await puller.gather(wait_s=1.0, linger_s=1.0)
        await publisher
        # The first message opens the batch; the linger keeps it open for the four that follow.
        assert [m.data for m in batch][:1] == [b"m00000"] and len(batch) >= 2
        rest = await _drain(puller, 5 - len(batch))
        assert [m.data for m in batch] + [m.data for b in rest for m in b] == [f"m{n:05d}".encode() for n in range(5)]
    finally:
        await puller.stop()


async def test_two_pullers_on_one_durable_share_the_messages_without_overlap(jetstream):
    nc, js, stream = jetstream
    bodies = await _publish(js, stream, 600)
    first, second = await _puller(nc, js, stream, max_batch=50), await _puller(nc, js, stream, max_batch=50)
    try:
        seen: list[bytes] = []

        async def run(puller):
            while len(seen) < len(bodies):
                batch = await puller.gather(wait_s=0.5, linger_s=0.01)
                for message in batch:
                    await message.ack()
                seen.extend(m.data for m in batch)

        await asyncio.wait_for(asyncio.gather(run(first), run(second)), 60)
        assert sorted(seen) == bodies and len(seen) == len(bodies)
    finally:
        await first.stop()
        await second.stop()


async def test_unacked_messages_are_delivered_again_after_the_ack_wait(jetstream):
    nc, js, stream = jetstream
    bodies = await _publish(js, stream, 5)
    puller = await _puller(nc, js, stream, ack_wait=1.0)
    try:
        unacked = await _drain(puller, 5, ack=False)
        assert [m.data for b in unacked for m in b] == bodies
        again = await _drain(puller, 5)  # redelivered by the server once the ack wait passed
        assert [m.data for b in again for m in b] == bodies
        assert all(m.metadata.num_delivered == 2 for b in again for m in b)
    finally:
        await puller.stop()
