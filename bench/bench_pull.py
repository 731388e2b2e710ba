"""CPU per JetStream message: nats-py `fetch()` against `infra/jetstream_pull.PullBatches`.

    .venv/bin/python bench/bench_pull.py --nats-url nats://127.0.0.1:PORT [--messages 50000]

(`cdrmed stack env --state-dir DIR` prints the URL.) Publishes the messages into a fresh file
stream, then pulls and acks them all through each path in turn, as the bridge does (batches of
1,000, the stream sequence read from each message). Prints one JSON line per path: process CPU
time per message (robust to other load on the machine) and wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from cdr_mediation.infra.jetstream_pull import PullBatches
from cdr_mediation.infra.nats import ensure_pull_consumer

BATCH = 1000
PAYLOAD = b"x" * 450  # about one DLR document


async def _fill(js, stream: str, count: int) -> None:
    await js.add_stream(StreamConfig(name=stream, subjects=[f"{stream}.>"], storage=StorageType.FILE))
    for start in range(0, count, 1000):
        await asyncio.gather(*[js.publish(f"{stream}.op{n % 6}", PAYLOAD) for n in range(start, min(count, start + 1000))])


def _config(stream: str) -> ConsumerConfig:
    return ConsumerConfig(durable_name="bench", filter_subject=f"{stream}.>", ack_policy=AckPolicy.EXPLICIT,
                          deliver_policy=DeliverPolicy.ALL, ack_wait=60, max_ack_pending=BATCH * 4)


async def _with_fetch(js, stream: str, count: int) -> int:
    subscription = await js.pull_subscribe(f"{stream}.>", durable="bench", stream=stream, config=_config(stream))
    got = 0
    while got < count:
        for message in await subscription.fetch(BATCH, timeout=1.0):
            _ = message.metadata.sequence.stream
            await message.ack()
            got += 1
    return got


async def _with_pull_batches(nc, js, stream: str, count: int) -> int:
    await ensure_pull_consumer(js, stream, _config(stream))
    puller = PullBatches(nc, stream, "bench", max_batch=BATCH)
    await puller.start()
    got = 0
    try:
        while got < count:
            for message in await puller.gather(wait_s=1.0, linger_s=0.02):
                _ = message.metadata.sequence.stream
                await message.ack()
                got += 1
    finally:
        await puller.stop()
    return got


async def run(url: str, count: int) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    try:
        for path in ("fetch", "pull_batches"):
            stream = f"BENCH{uuid.uuid4().hex[:6]}"
            await _fill(js, stream, count)
            wall, cpu = time.perf_counter(), time.process_time()
            got = await (_with_fetch(js, stream, count) if path == "fetch" else _with_pull_batches(nc, js, stream, count))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(json.dumps({"path": path, "messages": got, "wall_s": round(wall, 2),
                              "cpu_us_per_message": round(cpu / got * 1e6, 1)}), flush=True)
            await js.delete_stream(stream)
    finally:
        await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nats-url", required=True)
    parser.add_argument("--messages", type=int, default=50_000)
    args = parser.parse_args()
    asyncio.run(run(args.nats_url, args.messages))


if __name__ == "__main__":
    main()
