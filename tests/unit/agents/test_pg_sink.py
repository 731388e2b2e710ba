"""PostgresSink: users sharing one sink (the exporter's agent, its follow-up timer, the archiver)
take turns on its one connection instead of failing each other."""

from __future__ import annotations

import asyncio

import asyncpg

from cdr_mediation.agents.pg_sink import PostgresSink, SinkReadiness


class BusyConnection:
    """Refuses overlapping operations as asyncpg does."""

    def __init__(self) -> None:
        self.busy = False
        self.terminated = 0

    def is_closed(self) -> bool:
        return False

    def terminate(self) -> None:
        self.terminated += 1

    async def operation(self, value: int) -> int:
        if self.busy:
            raise asyncpg.InterfaceError("cannot perform operation: another operation is in progress")
        self.busy = True
        try:
            await asyncio.sleep(0.01)
            return value
        finally:
            self.busy = False


async def test_concurrent_commits_take_turns_on_the_held_connection(monkeypatch) -> None:
    sink = PostgresSink("test", "postgresql://unused", SinkReadiness(), contradiction=LookupError)
    connection = BusyConnection()

    async def held() -> BusyConnection:
        return connection

    monkeypatch.setattr(sink, "_connection", held)
    calls = []

    async def write(value: int):
        calls.append(value)
        return await connection.operation(value)

    results = await asyncio.gather(*(sink.commit(lambda conn, v=v: write(v)) for v in range(5)))
    assert results == [0, 1, 2, 3, 4]
    assert sorted(calls) == [0, 1, 2, 3, 4]  # each write ran once: nothing failed and was retried
    assert connection.terminated == 0 and sink.readiness.database_ok
