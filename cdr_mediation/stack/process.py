"""Daemons of the local stack: started detached, tracked by pid files, stopped without leftovers.

Each server runs in its own session (process group), so `stop` can signal everything it spawned,
and its pid is written to a file in the state directory before `start` returns: a crash of the
shell that ran `cdrmed stack up` leaves pid files that `cdrmed stack down` still finds.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Sequence


class StackError(RuntimeError):
    """A stack component could not be started, checked or stopped; the message says why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    condition: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll `condition` until it holds; raise StackError naming `what` when `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except Exception:  # noqa: BLE001 - a probe that raises is simply "not yet"
            pass
        if time.monotonic() >= deadline:
            raise StackError(f"{what} not ready after {timeout:.0f}s")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); it is not running.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def pid_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclasses.dataclass(frozen=True)
class Daemon:
    """One long-running server process of the stack.

    `marker` is a string that must appear in the process's command line; it guards against
    signalling an unrelated process that reused a stale pid.
    """

    name: str
    pid_file: Path
    log_file: Path
    marker: str

    def start(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        user: int | None = None,
        group: int | None = None,
        cwd: Path | None = None,
    ) -> int:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_file, "ab")
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                user=user,
                group=group,
                extra_groups=[] if user is not None else None,
                start_new_session=True,
                close_fds=True,
            )
        except FileNotFoundError as exc:
            raise StackError(f"{self.name}: cannot run {argv[0]!r}: {exc.strerror}") from exc
        finally:
            log.close()
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc.pid

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if pid_alive(pid) and self.marker in pid_cmdline(pid):
            return pid
        return None

    def running(self) -> bool:
        return self.pid() is not None

    def exited_early(self) -> str:
        """The tail of the log, for an error message when the daemon died during start-up."""
        try:
            lines = self.log_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-15:])

    def stop(self, *, first_signal: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        pid = self.pid()
        if pid is not None:
            _signal_group(pid, first_signal)
            deadline = time.monotonic() + timeout
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_alive(pid):
                _signal_group(pid, signal.SIGKILL)
                wait_until(lambda: not pid_alive(pid), timeout=5, what=f"{self.name} exit after SIGKILL")
            _reap(pid)
            # Children that outlived the leader (same process group) go with it.
            _signal_group(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def _reap(pid: int) -> None:
    """Collect the exit status if the daemon is our own child (tests start it in-process)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
