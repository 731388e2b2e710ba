"""The TLS identities of the simulated HTTPS endpoint: a development CA, the server's certificate
and the exporter's client certificate (mutual TLS).

DEVELOPMENT ONLY: the keys are unencrypted files in the state directory. This CA is not the
HSM's signing CA (`stack/hsm.py`): who may connect and who signed an export are separate trusts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import os
from pathlib import Path
from typing import Any

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
    ca_cert = _certificate("cdr-mediation dev regulator CA", ca_key, ca_key, None, role="ca")
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _certificate("regulator.localhost", server_key, ca_key, ca_cert, role="server")
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = _certificate(client_cn, client_key, ca_key, ca_cert, role="client")
    for cert, key, cert_path, key_path in ((ca_cert, ca_key, pki.ca_cert, pki.ca_key),
                                           (server_cert, server_key, pki.server_cert, pki.server_key),
                                           (client_cert, client_key, pki.client_cert, pki.client_key)):
        _write(key_path, _key_pem(key), mode=0o600)
        _write(cert_path, _cert_pem(cert), mode=0o644)
    return pki


def _certificate(common_name: str, key: Any, issuer_key: Any, issuer: Any, *, role: str) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
                         x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # Backdated a little: a client whose clock is slightly behind must not see "not yet valid".
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    if role == "ca":
        builder = (builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True))
    else:
        # A client certificate cannot serve as the server's and vice versa.
        usage = ExtendedKeyUsageOID.SERVER_AUTH if role == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(_key_usage(digital_signature=True), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if role == "server":
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"),
            ]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _key_usage(**granted: bool) -> Any:
    from cryptography import x509

    usages = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
              "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{usage: granted.get(usage, False) for usage in usages})


def _cert_pem(cert: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, *, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)  # before the first byte: O_CREAT's mode does not apply to a leftover tmp file
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
