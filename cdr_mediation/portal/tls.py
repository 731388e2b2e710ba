"""The portal's TLS: a server certificate, and client certificates required, checked against the
client CA and its CRL (a revoked certificate is refused in the handshake, before any HTTP).

The CRL is read at start-up: publishing a new CRL means restarting the portal (a rolling restart
in Kubernetes), which keeps "what was refused when" tied to a deployment event in the logs.
"""

from __future__ import annotations

import ssl
from pathlib import Path


def mutual_tls_context(*, server_cert: Path, server_key: Path, client_ca: Path, client_crl: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(server_cert, server_key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=str(client_ca))
    context.load_verify_locations(cafile=str(client_crl))  # a PEM CRL joins the store the same way
    context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return context
