"""Readiness probes: each asks a dependency a real question and returns a reason when it can't."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Probe = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class ProbeResult:
    name: str
    ready: bool
    detail: str = ""


async def run_probes(probes: dict[str, Probe], *, timeout: float = 3.0) -> list[ProbeResult]:
    async def one(name: str, probe: Probe) -> ProbeResult:
        try:
            await asyncio.wait_for(probe(), timeout)
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", with the reason
            return ProbeResult(name, False, f"{type(exc).__name__}: {exc}"[:300])
        return ProbeResult(name, True)

    return list(await asyncio.gather(*(one(name, probe) for name, probe in probes.items())))


def kafka_probe(bootstrap: str) -> Probe:
    async def probe() -> None:
        from aiokafka import AIOKafkaClient

        client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2500)
        try:
            await client.bootstrap()
        finally:
            await client.close()

    return probe


def postgres_probe(dsn: str) -> Probe:
    async def probe() -> None:
        import asyncpg

        conn = await asyncpg.connect(dsn, timeout=2.5)
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

    return probe


def hsm_probe(signer_factory: Callable[[], object]) -> Probe:
    """The HSM is ready when a session opens on the token (PKCS#11 calls block: run in a thread)."""

    async def probe() -> None:
        def open_and_close() -> None:
            signer = signer_factory()
            signer.close()

        await asyncio.to_thread(open_and_close)

    return probe
