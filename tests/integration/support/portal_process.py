"""`cdrmed portal` on the test stack, as a process, and calls to it over mutual TLS."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import aiohttp

from cdr_mediation.stack.process import free_port
from tests.integration.support.processes import eventually, spawn, stop


class RunningPortal:
    def __init__(self, stack_env: dict[str, str], log: Path, **env: str) -> None:
        self.port, self.probe_port = free_port(), free_port()
        self.log = log
        self.base = f"https://127.0.0.1:{self.port}"
        self.proc = spawn(["-m", "cdr_mediation.cli", "portal"], log_path=log, env={
            **stack_env, "CDR_PORTAL_PORT": str(self.port), "CDR_PORTAL_PROBE_PORT": str(self.probe_port),
            "CDR_METRICS_PORT": "0", **env})

    async def wait_ready(self) -> None:
        async def up() -> bool:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{self.probe_port}/healthz") as response:
                    return response.status == 200

        await eventually(up, timeout=60, what="portal /healthz", log=self.log, alive=self.proc)

    def stop(self) -> None:
        stop(self.proc)

    async def __aenter__(self) -> "RunningPortal":
        """Ready to serve; stopped on leaving the block, even when it never became ready."""
        try:
            await self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info) -> None:
        self.stop()


async def get(url: str, tls: ssl.SSLContext, **params) -> tuple[int, dict | str, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, ssl=tls, params=params or None,
                               timeout=aiohttp.ClientTimeout(total=30)) as response:
            text = await response.text()
            try:
                body = json.loads(text)
            except ValueError:
                body = text
            return response.status, body, dict(response.headers)
