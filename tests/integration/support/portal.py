"""Calling the portal as a role: the TLS context of that role's client certificate on the stack."""

from __future__ import annotations

import ssl

from cdr_mediation.stack.portal_pki import PortalPki
from pathlib import Path


def portal_tls(stack_env: dict[str, str], role: str) -> ssl.SSLContext:
    """Trusts the portal's server certificate and presents the stack's client certificate of
    `role` ("admin", "regulator", "auditor", "revoked", "unknown-role")."""
    pki = PortalPki(Path(stack_env["CDR_PORTAL_CLIENT_CA"]).parent)
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(*pki.client(role))
    return context
