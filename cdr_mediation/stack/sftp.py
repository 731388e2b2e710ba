"""The regulator's SFTP drop box: OpenSSH sshd on a high port, public-key authentication only.

The server accepts exactly one client key (generated here; the exporter uses it) for the OS user
that runs the stack, and forces `internal-sftp` into the drop-box directory: no shell, no
password, no keyboard-interactive.
"""

from __future__ import annotations

import asyncio
import getpass
import os
from pathlib import Path

from cdr_mediation.stack.component import Component, require_binary
from cdr_mediation.stack.layout import Health
from cdr_mediation.stack.process import StackError, wait_until


def _ensure_key(path: Path) -> None:
    import asyncssh

    if not path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519")
        key.write_private_key(str(path))
        key.write_public_key(str(path) + ".pub")
        os.chmod(path, 0o600)


class Sftp(Component):
    name = "sftp"

    def paths(self) -> dict[str, Path]:
        return {
            "host_key": self.dir / "ssh_host_ed25519_key",
            "client_key": self.dir / "client_ed25519_key",
            "authorized_keys": self.dir / "authorized_keys",
            "known_hosts": self.dir / "known_hosts",
            "dropbox": self.dir / "dropbox",
            "config": self.dir / "sshd_config",
        }

    def start(self) -> None:
        if self.health().healthy:
            return
        sshd = require_binary("sshd", package="openssh-server", candidates=("/usr/sbin/sshd",))
        paths = self.paths()
        _ensure_key(paths["host_key"])
        _ensure_key(paths["client_key"])
        paths["dropbox"].mkdir(exist_ok=True)
        (paths["dropbox"] / "inbox").mkdir(exist_ok=True)
        (paths["dropbox"] / "outbox").mkdir(exist_ok=True)
        paths["authorized_keys"].write_text(Path(str(paths["client_key"]) + ".pub").read_text())
        os.chmod(paths["authorized_keys"], 0o600)
        port = self.port()
        host_public = Path(str(paths["host_key"]) + ".pub").read_text().split()
        paths["known_hosts"].write_text(f"[127.0.0.1]:{port} {host_public[0]} {host_public[1]}\n")
        user = getpass.getuser()
        paths["config"].write_text(
            "\n".join([
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {paths['host_key']}",
                f"PidFile {self.dir / 'sshd.pid.server'}",
                f"AuthorizedKeysFile {paths['authorized_keys']}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "AuthenticationMethods publickey",
                "PermitRootLogin prohibit-password",
                f"AllowUsers {user}",
                "UsePAM no",
                # Keys live in the state directory, which need not satisfy sshd's owner checks.
                "StrictModes no",
                "AllowTcpForwarding no",
                "X11Forwarding no",
                "PermitTTY no",
                "Subsystem sftp internal-sftp",
                f"ForceCommand internal-sftp -d {paths['dropbox']}",
                "LogLevel INFO",
                "",
            ])
        )
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        daemon = self.daemon(marker=str(paths["config"]))
        daemon.stop()
        daemon.start([sshd, "-D", "-e", "-f", str(paths["config"])])
        self.state.update_manifest(
            self.name,
            {"port": port, "host": "127.0.0.1", "user": user, "client_key": str(paths["client_key"]),
             "known_hosts": str(paths["known_hosts"]), "dropbox": str(paths["dropbox"]),
             "remote_dir": "inbox"},
        )
        try:
            wait_until(lambda: self.health().healthy, timeout=15, what="SFTP (sshd)")
        except StackError as exc:
            raise StackError(f"{exc}\n{daemon.exited_early()}") from None

    def health(self) -> Health:
        config = self.config
        endpoint = f"sftp://{config.get('user')}@127.0.0.1:{config['port']}" if config.get("port") else ""
        if not config or not self.daemon(marker=str(self.paths()["config"])).running():
            return Health(False, endpoint, "not running")
        try:
            # A real login and listing; 15 s, not less: on a loaded 2-core machine sshd's key
            # exchange alone has taken over 5 s (a CI run reported a healthy server as down).
            asyncio.run(asyncio.wait_for(self._list_dropbox(config), 15))
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            return Health(False, endpoint, f"sftp login: {exc!r}")
        return Health(True, endpoint)

    @staticmethod
    async def _list_dropbox(config: dict) -> list[str]:
        import asyncssh

        async with asyncssh.connect(
            "127.0.0.1", port=config["port"], username=config["user"],
            client_keys=[config["client_key"]], known_hosts=config["known_hosts"],
            password=None, kbdint_auth=False,
        ) as conn:
            async with conn.start_sftp_client() as sftp:
                return await sftp.listdir(".")

    def stop(self) -> None:
        self.daemon(marker=str(self.paths()["config"])).stop()
