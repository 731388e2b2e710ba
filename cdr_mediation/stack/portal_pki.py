"""The portal's mutual-TLS identities on the local stack (DEVELOPMENT ONLY; docs/portal.md).

A client CA of its own (not the regulator simulator's, not the HSM's: who may call the portal is
a separate trust), the portal's server certificate for 127.0.0.1/localhost, one client
certificate per role (the role is the subject's OU), one certificate of a role the portal does
not know, and one admin certificate that is revoked in the CA's CRL. Created once per state
directory and kept: `cdrmed stack env` points the portal at them, and the README's `curl`
example uses them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

from cdr_mediation.domain.access import Role
from cdr_mediation.stack.dev_certs import cert_pem, certificate, key_pem, write_private

ORGANISATION = "cdr-mediation local stack portal (development only)"
UNKNOWN_ROLE = "operations-intern"  # an OU the portal maps to no role: it must refuse it


@dataclasses.dataclass(frozen=True)
class PortalPki:
    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "client-ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "client-ca.key"

    @property
    def crl(self) -> Path:
        return self.directory / "client-ca.crl.pem"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    def client(self, name: str) -> tuple[Path, Path]:
        """(certificate, key) of client `name`: a role's value, "revoked" or "unknown-role"."""
        return self.directory / f"client-{name}.pem", self.directory / f"client-{name}.key"

    def as_json(self) -> dict[str, str]:
        clients = {name: str(self.client(name)[0]) for name in _CLIENTS}
        return {"ca_cert": str(self.ca_cert), "crl": str(self.crl), "server_cert": str(self.server_cert),
                "clients": json.dumps(clients)}


_CLIENTS = (*(role.value for role in Role), "revoked", "unknown-role")


def ensure_portal_pki(directory: Path) -> PortalPki:
    pki = PortalPki(directory)
    if pki.crl.exists():  # written last: its presence means everything else is there
        return pki
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate("cdr-mediation dev portal client CA", ca_key, ca_key, None, role="ca",
                     organisation=ORGANISATION)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = certificate("portal.localhost", server_key, ca_key, ca, role="server", organisation=ORGANISATION)
    write_private(pki.server_key, key_pem(server_key), mode=0o600)
    write_private(pki.server_cert, cert_pem(server), mode=0o644)
    revoked_serial = None
    for name in _CLIENTS:
        unit = {"revoked": Role.ADMIN.value, "unknown-role": UNKNOWN_ROLE}.get(name, name)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = certificate(f"{name}.portal.localhost", key, ca_key, ca, role="client", organisation=ORGANISATION,
                           organizational_unit=unit)
        if name == "revoked":
            revoked_serial = cert.serial_number
        cert_path, key_path = pki.client(name)
        write_private(key_path, key_pem(key), mode=0o600)
        write_private(cert_path, cert_pem(cert), mode=0o644)
    write_private(pki.ca_key, key_pem(ca_key), mode=0o600)
    write_private(pki.ca_cert, cert_pem(ca), mode=0o644)
    now = dt.datetime.now(dt.timezone.utc)
    revoked = (x509.RevokedCertificateBuilder().serial_number(revoked_serial)
               .revocation_date(now - dt.timedelta(minutes=5)).build())
    crl = (x509.CertificateRevocationListBuilder().issuer_name(ca.subject)
           .last_update(now - dt.timedelta(minutes=5)).next_update(now + dt.timedelta(days=3650))
           .add_revoked_certificate(revoked).sign(ca_key, hashes.SHA256()))
    from cryptography.hazmat.primitives import serialization

    write_private(pki.crl, crl.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return pki
