"""The TLS identities of the simulated HTTPS endpoint: a development CA, the server's certificate
and the exporter's client certificate (mutual TLS).

DEVELOPMENT ONLY: the keys are unencrypted files in the state directory. This CA is not the
HSM's signing CA (`stack/hsm.py`): who may connect and who signed an export are separate trusts.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cdr_mediation.stack.dev_certs import cert_pem, certificate, key_pem, write_private

EXPORTER_CN = "cdr-exporter"
ORGANISATION = "cdr-mediation local stack (development only)"


@dataclasses.dataclass(frozen=True)
class DevPki:
    """PEM files: certificates mode 0644, keys 0600."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def ensure_dev_pki(directory: Path, *, client_cn: str = EXPORTER_CN) -> DevPki:
    """Create (once) a CA, a server certificate for 127.0.0.1/localhost and a client certificate.

    Kept across restarts: `cdrmed stack env` points the exporter at these files.
    """
    pki = DevPki(*(directory / name for name in ("ca.pem", "ca.key", "server.pem", "server.key",
                                                 "client.pem", "client.key")))
    if all(path.exists() for path in dataclasses.astuple(pki)):
        return pki
    from cryptography.hazmat.primitives.asymmetric import ec

    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = certificate("cdr-mediation dev regulator CA", ca_key, ca_key, None, role="ca",
                           organisation=ORGANISATION)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = certificate("regulator.localhost", server_key, ca_key, ca_cert, role="server",
                               organisation=ORGANISATION)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = certificate(client_cn, client_key, ca_key, ca_cert, role="client", organisation=ORGANISATION)
    for cert, key, cert_path, key_path in ((ca_cert, ca_key, pki.ca_cert, pki.ca_key),
                                           (server_cert, server_key, pki.server_cert, pki.server_key),
                                           (client_cert, client_key, pki.client_cert, pki.client_key)):
        write_private(key_path, key_pem(key), mode=0o600)
        write_private(cert_path, cert_pem(cert), mode=0o644)
    return pki
