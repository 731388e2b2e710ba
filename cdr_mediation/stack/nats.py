"""NATS with JetStream (file storage under the state directory)."""

from __future__ import annotations

import urllib.request

from cdr_mediation.stack.component import Component, require_binary
from cdr_mediation.stack.layout import Health
from cdr_mediation.stack.process import StackError, wait_until


class Nats(Component):
    name = "nats"

    def start(self) -> None:
        if self.health().healthy:
            return
        binary = require_binary("nats-server", package="nats-server")
        port, monitor_port = self.port(), self.port("monitor_port")
        store = self.dir / "jetstream"
        store.mkdir(exist_ok=True)
        daemon = self.daemon(marker="nats-server")
        daemon.stop()
        daemon.start(
            [binary, "-a", "127.0.0.1", "-p", str(port), "-m", str(monitor_port),
             "-js", "-sd", str(store), "-n", "cdr-stack-nats"]
        )
        self.state.update_manifest(
            self.name, {"port": port, "monitor_port": monitor_port, "url": f"nats://127.0.0.1:{port}"}
        )
        try:
            wait_until(lambda: self.health().healthy, timeout=15, what="NATS JetStream")
        except StackError as exc:
            raise StackError(f"{exc}\n{daemon.exited_early()}") from None

    def health(self) -> Health:
        config = self.config
        endpoint = config.get("url", "")
        if not config or not self.daemon("nats-server").running():
            return Health(False, endpoint, "not running")
        url = f"http://127.0.0.1:{config['monitor_port']}/healthz?js-enabled-only=true"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body = response.read().decode()
        except OSError as exc:
            return Health(False, endpoint, f"healthz: {exc}")
        return Health('"ok"' in body, endpoint, "" if '"ok"' in body else body.strip())

    def stop(self) -> None:
        self.daemon("nats-server").stop()
