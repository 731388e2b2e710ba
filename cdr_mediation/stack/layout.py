"""Where the local stack keeps its state, and what it remembers between commands.

Everything lives under one state directory (default `.stack/`): each component's data, logs and
pid file, `stack.json` (ports and endpoints, safe to show) and `secrets.json` (passwords and PINs,
mode 0600). `cdrmed stack up`, `status` and `down` are separate processes; these files are how
they agree.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import secrets
from pathlib import Path
from typing import Any

DEFAULT_STATE_DIR = Path(".stack")


@dataclasses.dataclass(frozen=True)
class Health:
    healthy: bool
    endpoint: str
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {"healthy": self.healthy, "endpoint": self.endpoint}
        if self.detail:
            result["detail"] = self.detail
        return result


class StateDir:
    """The state directory and its two JSON documents."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def component_dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def manifest_path(self) -> Path:
        return self.root / "stack.json"

    @property
    def secrets_path(self) -> Path:
        return self.root / "secrets.json"

    def read_manifest(self) -> dict[str, Any]:
        return _read_json(self.manifest_path)

    @contextlib.contextmanager
    def _locked(self):
        """Serialise read-modify-write of the JSON documents (components start concurrently)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def update_manifest(self, component: str, values: dict[str, Any]) -> None:
        with self._locked():
            manifest = self.read_manifest()
            manifest.setdefault(component, {}).update(values)
            _write_json(self.manifest_path, manifest, mode=0o644)

    def secret(self, name: str, *, nbytes: int = 18) -> str:
        """A secret that is generated once for this state directory and then kept."""
        with self._locked():
            stored = _read_json(self.secrets_path)
            if name not in stored:
                # Hex only: these end up in DSNs and command lines.
                stored[name] = secrets.token_hex(nbytes)
                _write_json(self.secrets_path, stored, mode=0o600)
            return stored[name]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def _write_json(path: Path, value: dict[str, Any], *, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        json.dump(value, handle, indent=2, sort_keys=True)
    os.replace(tmp, path)
