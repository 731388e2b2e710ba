"""The regulator simulator as a component of the local stack: started, checked and stopped like
the others, one daemon process (`python -m cdr_mediation.stack.regulator regulator.json`)."""

from __future__ import annotations

import getpass
import json
import ssl
import sys
import urllib.request
from pathlib import Path

from cdr_mediation.stack.component import Component
from cdr_mediation.stack.layout import Health
from cdr_mediation.stack.process import StackError, free_port, wait_until
from cdr_mediation.stack.regulator.dropbox import POLL_INTERVAL_S
from cdr_mediation.stack.regulator.pki import EXPORTER_CN, ensure_dev_pki
from cdr_mediation.stack.regulator.script import DEFAULT_RULE
from cdr_mediation.stack.sftp import Sftp


class Regulator(Component):
    name = "regulator"

    @property
    def config_path(self) -> Path:
        return self.dir / "regulator.json"

    def start(self) -> None:
        if self.health().healthy:
            return
        pki = ensure_dev_pki(self.dir / "pki")
        # The SFTP component's drop box is the one store of both channels. Only its directories
        # are shared: the simulator neither needs sshd up nor waits for it.
        dropbox = Sftp(self.state).paths()["dropbox"]
        for directory in (dropbox / "inbox", dropbox / "outbox"):
            directory.mkdir(parents=True, exist_ok=True)
        https_port = self.port("https_port")
        control_port = self.port("control_port")
        while control_port == https_port:
            control_port = free_port()
        config = {
            "host": "127.0.0.1", "https_port": https_port, "control_port": control_port,
            "inbox": str(dropbox / "inbox"), "outbox": str(dropbox / "outbox"),
            "ledger": str(self.dir / "receipts.jsonl"), "rules": str(self.dir / "answers.json"),
            "ca_cert": str(pki.ca_cert), "server_cert": str(pki.server_cert), "server_key": str(pki.server_key),
            "sftp_user": getpass.getuser(), "default_answer": DEFAULT_RULE.as_json(),
            "poll_interval_s": POLL_INTERVAL_S,
        }
        self.config_path.write_text(json.dumps(config, indent=2))
        daemon = self.daemon(marker=str(self.config_path))
        daemon.stop()
        daemon.start([sys.executable, "-m", "cdr_mediation.stack.regulator", str(self.config_path)])
        self.state.update_manifest(self.name, {
            "host": "127.0.0.1", "https_port": https_port, "control_port": control_port,
            "url": f"https://127.0.0.1:{https_port}", "control_url": f"http://127.0.0.1:{control_port}",
            "ca_cert": str(pki.ca_cert), "client_cert": str(pki.client_cert), "client_key": str(pki.client_key),
            "inbox": config["inbox"], "outbox": config["outbox"], "ledger": config["ledger"],
            "sftp_remote_dir": "inbox", "sftp_responses_dir": "outbox",
        })
        try:
            wait_until(lambda: self.health().healthy, timeout=20, what="regulator simulator")
        except StackError as exc:
            raise StackError(f"{exc}\n{self.daemon(marker=str(self.config_path)).exited_early()}") from None

    def health(self) -> Health:
        config = self.config
        endpoint = config.get("url", "")
        if not config or not self.daemon(marker=str(self.config_path)).running():
            return Health(False, endpoint, "not running")
        try:
            # A real mutual-TLS request with the exporter's certificate, and the control API.
            context = ssl.create_default_context(cafile=config["ca_cert"])
            context.load_cert_chain(config["client_cert"], config["client_key"])
            with urllib.request.urlopen(f"{endpoint}/v1/health", context=context, timeout=5) as response:
                client = json.loads(response.read())["client"]
            with urllib.request.urlopen(f"{config['control_url']}/control/health", timeout=5) as response:
                json.loads(response.read())
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            return Health(False, endpoint, f"regulator: {exc!r}")
        if client != EXPORTER_CN:
            return Health(False, endpoint, f"client certificate seen as {client!r}")
        return Health(True, endpoint)

    def stop(self) -> None:
        self.daemon(marker=str(self.config_path)).stop()
