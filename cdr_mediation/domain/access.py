"""Who may call which portal endpoint (DESIGN.md §8; docs/portal.md): one table, no I/O.

A caller's role comes from its client certificate, which the portal's TLS layer has already
checked against the client CA and its CRL: the subject's organisational unit (OU) names exactly
one role. A certificate with no OU, several, or one that is not a role is refused: a role is
never guessed.

The table maps each endpoint (method and route pattern, as registered) to the roles allowed.
An endpoint not in the table is refused to everyone: a new route must be added here, with its
roles, before anyone can call it (a test checks every registered route has an entry).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping


class Role(str, enum.Enum):
    ADMIN = "admin"  # operates the system: adjustments, exports, verification
    REGULATOR = "regulator"  # reads CDRs, rollups, exports, proofs of its jurisdiction
    AUDITOR = "auditor"  # reads everything, including the audit log; writes nothing


EVERYONE = frozenset(Role)
READERS = frozenset(Role)

# (method, route) → roles. Routes as aiohttp registers them ("/v1/cdrs/{cdr_id}/proof").
ACCESS: Mapping[tuple[str, str], frozenset[Role]] = {
    ("GET", "/healthz"): EVERYONE,
    ("GET", "/readyz"): EVERYONE,
    ("GET", "/metrics"): frozenset({Role.ADMIN, Role.AUDITOR}),
    ("GET", "/v1/rollups"): READERS,
    ("GET", "/v1/cdrs/{cdr_id}/proof"): READERS,
    # Writes: the commerce/admin team only (docs/adjustments.md).
    ("POST", "/v1/adjustments"): frozenset({Role.ADMIN}),
    ("GET", "/v1/adjustments/{adjustment_id}"): frozenset({Role.ADMIN, Role.AUDITOR}),
    ("GET", "/v1/cdrs"): READERS,
    ("GET", "/v1/cdrs/{cdr_id}"): READERS,
    ("GET", "/v1/exports"): READERS,
    ("GET", "/v1/exports/{operator_id}/{day}"): READERS,
    # The signed files themselves: evidence for those who hold others to account.
    ("GET", "/v1/exports/{operator_id}/{day}/download"): frozenset({Role.ADMIN, Role.REGULATOR, Role.AUDITOR}),
    # Who did what in this system: our own operators and the external auditors, not the regulator.
    ("GET", "/v1/audit"): frozenset({Role.ADMIN, Role.AUDITOR}),
    ("GET", "/v1/openapi.json"): EVERYONE,
    # Running a verification writes only its own audit row; anyone who may read the evidence may
    # have it re-checked (docs/verification.md).
    ("POST", "/v1/cdr/chain/verify"): frozenset({Role.ADMIN, Role.AUDITOR, Role.REGULATOR}),
}


class AccessRefused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def role_of(organizational_units: Iterable[str]) -> Role:
    """The one role a certificate's subject OUs name; AccessRefused (403) otherwise."""
    units = list(organizational_units)
    if len(units) != 1:
        raise AccessRefused(403, "no_role", f"the client certificate must name exactly one role (OU); it names {len(units)}")
    try:
        return Role(units[0])
    except ValueError:
        raise AccessRefused(403, "unknown_role", f"the client certificate's OU {units[0]!r} is not a role "
                                                 f"({', '.join(r.value for r in Role)})") from None


def authorise(method: str, route: str, role: Role) -> None:
    """AccessRefused (403) unless `role` may call `method route`."""
    allowed = ACCESS.get((method.upper(), route))
    if allowed is None:
        raise AccessRefused(403, "forbidden", f"{method} {route} is open to no role")
    if role not in allowed:
        raise AccessRefused(403, "forbidden", f"role {role.value} may not call {method} {route}")
