"""Pulling a durable JetStream consumer in batches through one callback inbox.

nats-py's `PullSubscription.fetch()` takes every message out of its queue with
`next_msg(timeout)`, i.e. an `asyncio.wait_for` (a task and a timer) per message. At thousands
of DLRs per second that was most of the bridge's CPU: measured here with acks, ~81 µs of CPU per
message through `fetch(1000)` against ~28 µs through this module (`bench/bench_pull.py`).

This uses the same JetStream pull protocol `fetch()` speaks (a JSON request to
`$JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>` with the reply subject set to our inbox; the
server answers with messages and ends a request early with a status message: 404 no messages,
408 request expired, 409 conflict, 100 idle heartbeat), through nats-py's public core API:
`subscribe(inbox, cb=...)` and `publish(..., reply=inbox)`. The callback only appends; waiting
happens once per batch. Messages are nats-py `Msg` objects, acked with `msg.ack()` as before.

One pull request is open at a time. After a full batch the next request is sent at once, so
the server delivers while the caller forwards. Messages delivered while the caller is busy wait
in memory for the next `gather` (they count against the consumer's `max_ack_pending` and are
redelivered by the server after `ack_wait` if this process dies).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque

from nats.aio.msg import Msg

STATUS_HEADER = "Status"
HEARTBEAT = "100"
# Statuses that end a pull request (JetStream pull protocol).
REQUEST_ENDED = frozenset({"404", "408", "409"})
REQUEST_END_MARGIN_S = 1.0
PREFETCH_EXPIRES_S = 1.0


class PullError(RuntimeError):
    """The server ended a pull request with a status that is not part of normal operation."""


class PullBatches:
    def __init__(self, nc, stream: str, durable: str, *, max_batch: int) -> None:
        self._nc = nc
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._max_batch = max_batch
        self._inbox = nc.new_inbox()
        self._ready: deque[Msg] = deque()
        self._outstanding = 0  # messages the open request may still deliver; 0 = no open request
        self._request_ends_at = 0.0
        self._arrived = asyncio.Event()
        self._error: str | None = None
        self._subscription = None

    async def start(self) -> None:
        # Pending limits above one full batch, so nats-py never drops a delivered message as a
        # slow consumer (the callback only appends).
        self._subscription = await self._nc.subscribe(
            self._inbox, cb=self._on_message,
            pending_msgs_limit=self._max_batch * 8, pending_bytes_limit=256 * 1024 * 1024)

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None

    async def _on_message(self, msg: Msg) -> None:
        headers = msg.headers
        status = headers.get(STATUS_HEADER) if headers else None
        if status is None:
            self._ready.append(msg)
            self._outstanding = max(self._outstanding - 1, 0)
        elif status == HEARTBEAT:
            return
        else:
            self._outstanding = 0
            if status not in REQUEST_ENDED:
                self._error = f"pull request ended with status {status} {headers.get('Description', '')}".strip()
        self._arrived.set()

    def _request_open(self, now: float) -> bool:
        # A request's end is announced by the server (408 at its expiry), but that status is lost
        # when the connection drops meanwhile; past its expiry (plus a margin) it is over anyway.
        if self._outstanding and now > self._request_ends_at + REQUEST_END_MARGIN_S:
            self._outstanding = 0
        return self._outstanding > 0

    async def _request(self, batch: int, expires_s: float) -> None:
        expires_s = max(expires_s, 0.01)
        request = {"batch": batch, "expires": int(expires_s * 1_000_000_000)}
        self._outstanding = batch
        self._request_ends_at = asyncio.get_running_loop().time() + expires_s
        await self._nc.publish(self._next_subject, json.dumps(request).encode(), reply=self._inbox)

    async def _wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def gather(self, *, wait_s: float, linger_s: float) -> list[Msg]:
        """Up to `max_batch` messages: wait up to `wait_s` for a first one, then up to `linger_s`
        for more (the unit that flows on is a batch, DESIGN.md §10). [] when none came."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            self._arrived.clear()  # before the check: an arrival after it wakes the wait below
            if self._ready:
                break
            self._raise_error()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            if not self._request_open(loop.time()):
                await self._request(self._max_batch, remaining)
            await self._wait(remaining)
        linger_end = loop.time() + linger_s
        while True:
            self._arrived.clear()
            remaining = linger_end - loop.time()
            if len(self._ready) >= self._max_batch or remaining <= 0:
                break
            self._raise_error()
            if not self._request_open(loop.time()):
                await self._request(self._max_batch - len(self._ready), remaining)
            await self._wait(remaining)
        count = min(len(self._ready), self._max_batch)
        batch = [self._ready.popleft() for _ in range(count)]
        if count == self._max_batch and not self._ready and not self._request_open(loop.time()):
            # A full batch means a backlog: ask for the next one now, so the server delivers it
            # while the caller forwards this one (one batch round trip less per batch).
            await self._request(self._max_batch, PREFETCH_EXPIRES_S)
        return batch

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise PullError(error)
