"""Child processes of integration tests: started with the stack's settings, stopped for sure."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Awaitable, Callable, TypeVar

T = TypeVar("T")


def spawn(args: list[str], *, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")
    return subprocess.Popen(
        [sys.executable, *args], env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen, *, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return proc.returncode


async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    timeout: float,
    what: str,
    log: Path | None = None,
    alive: subprocess.Popen | None = None,
    interval: float = 0.2,
) -> T:
    """Await `probe` until it returns a truthy value; fail with `what` (and the tail of `log`)
    after `timeout` seconds, or at once if the process `alive` has exited."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last_error: BaseException | None = None
    while loop.time() < deadline:
        if alive is not None and alive.poll() is not None:
            raise AssertionError(f"{what}: process exited with {alive.returncode}\n{tail(log) if log else ''}")
        try:
            result = await probe()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_error = exc
        await asyncio.sleep(interval)
    raise AssertionError(
        f"{what}: not reached within {timeout}s (last error: {last_error!r})\n{tail(log) if log else ''}"
    )


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
