"""The shape every stack component has: start, report health, stop."""

from __future__ import annotations

import abc
import shutil

from cdr_mediation.stack.layout import Health, StateDir
from cdr_mediation.stack.process import Daemon, StackError, free_port, port_open


class Component(abc.ABC):
    """A real server (or token) of the local stack, living under its own state sub-directory."""

    name: str

    def __init__(self, state: StateDir) -> None:
        self.state = state
        self.dir = state.component_dir(self.name)

    @property
    def config(self) -> dict:
        """What `start` recorded in stack.json (ports, paths)."""
        return self.state.read_manifest().get(self.name, {})

    @abc.abstractmethod
    def start(self) -> None:
        """Start (or, if already healthy, keep) the component; return when it answers."""

    @abc.abstractmethod
    def health(self) -> Health:
        """Ask the running component a real question; never raises."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop every process of the component; data stays for the next start."""

    def port(self, key: str = "port") -> int:
        """The port recorded for this component if it is free again, else a new free one.

        A restarted server keeps its address, so clients configured from `stack env` (and a
        worker riding out a database restart) reconnect without being reconfigured.
        """
        recorded = self.config.get(key)
        if recorded and not port_open(recorded):
            return recorded
        return free_port()

    def daemon(self, marker: str) -> Daemon:
        return Daemon(
            name=self.name,
            pid_file=self.dir / f"{self.name}.pid",
            log_file=self.dir / f"{self.name}.log",
            marker=marker,
        )


def require_binary(name: str, *, package: str, candidates: tuple[str, ...] = ()) -> str:
    """Absolute path of an executable, or a StackError telling how to install it."""
    for candidate in (name, *candidates):
        found = shutil.which(candidate)
        if found:
            return found
    raise StackError(
        f"{name!r} is not installed; install the Debian package {package!r} "
        f"(apt-get install -y --no-install-recommends {package}) or run scripts/bootstrap"
    )
