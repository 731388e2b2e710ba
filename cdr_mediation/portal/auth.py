"""Who is calling: the client certificate's identity, and the role check of every request.

The TLS layer (`portal/tls.py`) has already refused a caller without a certificate, with one of
an unknown CA, or with a revoked one, before any HTTP is read. Here the verified certificate's
subject gives the actor (its CN, recorded in audit rows) and the role (its one OU), and the
access table (`domain/access.py`) decides. A request on a listener without TLS has no identity
and is refused (401): the API is never served in clear.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from aiohttp import web

from cdr_mediation.domain.access import AccessRefused, Role, authorise, role_of
from cdr_mediation.portal.errors import ApiError


@dataclasses.dataclass(frozen=True)
class Caller:
    actor: str  # the certificate's CN
    role: Role


def certificate_subject(request: web.Request) -> dict[str, list[str]] | None:
    """The verified peer certificate's subject attributes (name → values), None without TLS."""
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    if ssl_object is None:
        return None
    certificate = ssl_object.getpeercert() or {}
    subject: dict[str, list[str]] = {}
    for relative_name in certificate.get("subject", ()):
        for key, value in relative_name:
            subject.setdefault(key, []).append(value)
    return subject


SubjectOf = Callable[[web.Request], "dict[str, list[str]] | None"]
SUBJECT_OF = web.AppKey("subject_of", SubjectOf)  # replaceable in unit tests of handlers
CALLER = web.RequestKey("caller", Caller)  # the authenticated caller of a request


@web.middleware
async def require_role(request: web.Request, handler):
    resource = request.match_info.route.resource
    if resource is None:  # no route: the router's 404/405, which tells nothing
        return await handler(request)
    subject = request.app[SUBJECT_OF](request)
    if subject is None:
        return ApiError(401, "client_certificate_required", "this API is served over mutual TLS only").response()
    try:
        role = role_of(subject.get("organizationalUnitName", []))
        method = "GET" if request.method == "HEAD" else request.method
        authorise(method, resource.canonical, role)
    except AccessRefused as refused:
        return ApiError(refused.status, refused.code, refused.message).response()
    request[CALLER] = Caller(actor=(subject.get("commonName") or ["?"])[0], role=role)
    return await handler(request)
