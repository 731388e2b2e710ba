"""The local stack as one unit: `up`, `status`, `down`, and the settings that point at it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

from cdr_mediation.stack.component import Component
from cdr_mediation.stack.hsm import Hsm
from cdr_mediation.stack.kafka import Kafka
from cdr_mediation.stack.layout import DEFAULT_STATE_DIR, Health, StateDir
from cdr_mediation.stack.nats import Nats
from cdr_mediation.stack.postgres import Postgres
from cdr_mediation.stack.process import StackError
from cdr_mediation.stack.regulator import Regulator
from cdr_mediation.stack.s3 import S3
from cdr_mediation.stack.sftp import Sftp

COMPONENTS: tuple[type[Component], ...] = (Nats, Kafka, Postgres, Hsm, Sftp, S3, Regulator)


class Stack:
    def __init__(self, state_dir: Path = DEFAULT_STATE_DIR) -> None:
        self.state = StateDir(state_dir)
        self.components = {cls.name: cls(self.state) for cls in COMPONENTS}

    def up(self) -> dict[str, Health]:
        """Start every component (they are independent, so concurrently); keep healthy ones."""
        _import_before_threads()
        with ThreadPoolExecutor(max_workers=len(self.components)) as pool:
            futures = {name: pool.submit(c.start) for name, c in self.components.items()}
        failures = {}
        for name, future in futures.items():
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - collected and reported together
                failures[name] = exc if isinstance(exc, StackError) else StackError(f"{type(exc).__name__}: {exc}")
        if failures:
            report = "\n".join(f"- {name}: {exc}" for name, exc in failures.items())
            raise StackError(f"stack up failed for {sorted(failures)}:\n{report}")
        return self.status()

    def status(self) -> dict[str, Health]:
        with ThreadPoolExecutor(max_workers=len(self.components)) as pool:
            futures = {name: pool.submit(c.health) for name, c in self.components.items()}
        return {name: future.result() for name, future in futures.items()}

    def down(self) -> None:
        errors = []
        for component in self.components.values():
            try:
                component.stop()
            except Exception as exc:  # noqa: BLE001 - stop the others, then report
                errors.append(f"{component.name}: {exc}")
        if errors:
            raise StackError("stack down: " + "; ".join(errors))

    def settings_env(self) -> dict[str, str]:
        """CDR_* environment variables that point the system at this stack."""
        manifest = self.state.read_manifest()
        missing = [c for c in self.components if c not in manifest]
        if missing:
            raise StackError(f"stack in {self.state.root} has never been started ({missing}); run `cdrmed stack up`")
        postgres = self.components["postgres"]
        hsm = self.components["hsm"].hsm_config()
        sftp, s3, regulator = manifest["sftp"], manifest["s3"], manifest["regulator"]
        from cdr_mediation.stack import s3 as s3_component

        return {
            "CDR_NATS_URL": manifest["nats"]["url"],
            "CDR_KAFKA_BOOTSTRAP": manifest["kafka"]["bootstrap"],
            "CDR_KAFKA_IDEMPOTENT_PRODUCER": "false",  # Tansu has no InitProducerId
            "CDR_PG_DSN": postgres.app_dsn(),
            "CDR_HSM_MODULE": hsm.module_path,
            "CDR_HSM_TOKEN_LABEL": hsm.token_label,
            "CDR_HSM_PIN": hsm.pin,
            "CDR_HSM_SOFTHSM2_CONF": hsm.softhsm2_conf or "",
            "CDR_HSM_CERT_ED25519": manifest["hsm"]["certs"]["ed25519"],
            "CDR_HSM_CERT_ECDSA_P256": manifest["hsm"]["certs"]["ecdsa-p256"],
            "CDR_HSM_CA_CERT": manifest["hsm"]["ca_cert"],
            "CDR_SFTP_HOST": sftp["host"],
            "CDR_SFTP_PORT": str(sftp["port"]),
            "CDR_SFTP_USER": sftp["user"],
            "CDR_SFTP_KEY_PATH": sftp["client_key"],
            "CDR_SFTP_KNOWN_HOSTS": sftp["known_hosts"],
            "CDR_SFTP_REMOTE_DIR": sftp["remote_dir"],
            # The simulator serves both channels; SFTP is the default, a test may switch to HTTPS.
            "CDR_DELIVERY_METHOD": "sftp",
            "CDR_HTTPS_URL": regulator["url"],
            "CDR_HTTPS_CA_CERT": regulator["ca_cert"],
            "CDR_HTTPS_CLIENT_CERT": regulator["client_cert"],
            "CDR_HTTPS_CLIENT_KEY": regulator["client_key"],
            "CDR_S3_ENDPOINT": s3["endpoint"],
            "CDR_S3_BUCKET": s3["bucket"],
            "CDR_S3_REGION": s3["region"],
            "CDR_S3_ACCESS_KEY": s3_component.ACCESS_KEY,
            "CDR_S3_SECRET_KEY": s3_component.SECRET_KEY,
            "CDR_MSISDN_HASH_KEY": self.state.secret("msisdn_hash_key", nbytes=32),
            "CDR_DATA_DIR": str(self.state.root / "worker-data"),
            "CDR_PRICING_FILE": str(self._dev_file("pricing.json", "pricing.dev.json")),
            "CDR_EXPORT_CONFIG_FILE": str(self._dev_file("export-config.json", "export.dev.json")),
            **self._portal_tls(),
        }

    def _portal_tls(self) -> dict[str, str]:
        from cdr_mediation.stack.portal_pki import ensure_portal_pki

        pki = ensure_portal_pki(self.state.root / "portal-pki")
        return {"CDR_PORTAL_TLS_CERT": str(pki.server_cert), "CDR_PORTAL_TLS_KEY": str(pki.server_key),
                "CDR_PORTAL_CLIENT_CA": str(pki.ca_cert), "CDR_PORTAL_CLIENT_CRL": str(pki.crl)}

    def _dev_file(self, name: str, packaged: str) -> Path:
        """A configuration file for the synthetic operators (pricing, export), copied into the
        state directory so it can be edited locally."""
        target = self.state.root / name
        if not target.exists():
            target.write_bytes(resources.files("cdr_mediation.stack").joinpath(packaged).read_bytes())
        return target


def _import_before_threads() -> None:
    """Import the packages the components import lazily, once, before their threads start.

    Two threads importing the same package for the first time can trip the import system's
    deadlock detection on a circular import inside it (seen: `_DeadlockError` on
    cryptography.hazmat.backends.openssl.backend while the SFTP and HSM components started).
    """
    import asyncssh  # noqa: F401  (imports cryptography's OpenSSL backend)
    import cryptography.hazmat.backends.openssl.backend  # noqa: F401
    import cryptography.x509  # noqa: F401
