"""Delivery to the regulator's HTTPS endpoint (aiohttp) with mutual TLS.

We trust only the configured server CA and present our client certificate. The API:

    PUT /v1/files/{name}        body = the file, header Content-SHA256 = its lowercase hex digest
        201 stored · 200 these exact bytes were already stored (nothing changes)
        409 other bytes are stored under this name · 400 {"error": "digest_mismatch"} the body
        arrived altered
    GET /v1/responses[?file=NAME]   {"responses": [{"name", "file", "kind", "sha256", "size"}]}
    GET /v1/responses/{name}        the answer file's bytes

The receiver decides idempotency by name and digest, so a retry after a lost response is
harmless. Errors come out as the typed exceptions of `errors.py`, like the SFTP channel's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp

from cdr_mediation.infra.delivery.errors import (
    AccessRefused,
    DeliveryConflict,
    DeliveryError,
    EndpointUnavailable,
    PermanentDeliveryError,
    RetryableDeliveryError,
)
from cdr_mediation.infra.delivery.files import OutgoingFile, check_file_name, parse_response_name
from cdr_mediation.infra.delivery.results import DeliveryReceipt, Outcome, ResponseFile

CHANNEL = "https"
DIGEST_HEADER = "Content-SHA256"
FILES_PATH = "/v1/files"
RESPONSES_PATH = "/v1/responses"
T = TypeVar("T")

# Statuses after which the same request may succeed later.
_RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclasses.dataclass(frozen=True)
class HttpsEndpoint:
    """Where to deliver and with which identity (dev values: the regulator component of the stack)."""

    base_url: str  # https://host:port
    ca_file: Path  # the CA that signed the server's certificate; nothing else is trusted
    client_cert: Path | None  # PEM; None presents no certificate (the server then refuses us)
    client_key: Path | None
    # Production keys are encrypted at rest; the dev PKI's are not (""). Always handed to
    # OpenSSL, which would otherwise prompt on the terminal for an encrypted key.
    client_key_passphrase: str = dataclasses.field(default="", repr=False)
    connect_timeout_s: float = 10.0
    operation_timeout_s: float = 600.0


def status_error(status: int, body: dict[str, Any], *, file_name: str | None) -> DeliveryError:
    """The delivery error an unexpected HTTP status stands for."""
    detail = body.get("error") or body.get("detail") or ""
    message = f"HTTP {status}{': ' + str(detail) if detail else ''}"
    if status == 400 and detail == "digest_mismatch":
        return RetryableDeliveryError(f"{message} (the body arrived altered)", channel=CHANNEL, file_name=file_name)
    if status in (401, 403):
        return AccessRefused(message, channel=CHANNEL, file_name=file_name)
    if status in _RETRYABLE_STATUSES:
        return RetryableDeliveryError(message, channel=CHANNEL, file_name=file_name)
    return PermanentDeliveryError(message, channel=CHANNEL, file_name=file_name)


def _tls_refusal(exc: BaseException) -> ssl.SSLError | None:
    """The TLS refusal behind `exc`, if any: their certificate did not verify, or they sent an
    alert (certificate required, unknown CA, handshake failure). A connection cut during the
    handshake (EOF) is an outage, not a refusal."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, aiohttp.ClientConnectorError) and isinstance(current.os_error, ssl.SSLError):
            current = current.os_error
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        if isinstance(current, ssl.SSLError) and not isinstance(current, (ssl.SSLEOFError, ssl.SSLZeroReturnError,
                                                                          ssl.SSLSyscallError)):
            if "ALERT" in (current.reason or "") or "CERTIFICATE" in (current.reason or ""):
                return current
            return None
        current = current.__cause__ or current.__context__
    return None


def classify_http_error(exc: BaseException, *, file_name: str | None = None) -> DeliveryError | None:
    """The delivery error an aiohttp/OS exception stands for; None for anything else (a bug)."""
    if isinstance(exc, DeliveryError):
        return exc
    refusal = _tls_refusal(exc)
    if refusal is not None:
        # Our certificate was refused or theirs did not verify: the same again fails the same way.
        return AccessRefused(f"TLS: {refusal}", channel=CHANNEL, file_name=file_name)
    if isinstance(exc, aiohttp.InvalidURL):
        return PermanentDeliveryError(f"invalid URL: {exc}", channel=CHANNEL, file_name=file_name)
    if isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError)):
        reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        return EndpointUnavailable(reason, channel=CHANNEL, file_name=file_name)
    return None


class HttpsDelivery:
    """Deliver export files to, and fetch answers from, one HTTPS endpoint."""

    channel = CHANNEL

    def __init__(self, endpoint: HttpsEndpoint) -> None:
        self.endpoint = endpoint

    async def deliver(self, file_name: str, data: bytes) -> DeliveryReceipt:
        outgoing = OutgoingFile.from_bytes(file_name, data, channel=CHANNEL)
        return await self._guarded(file_name, lambda: self._deliver(outgoing))

    async def deliver_file(self, file_name: str, path: Path) -> DeliveryReceipt:
        """`deliver` for a file on disk, streamed (large exports)."""
        outgoing = OutgoingFile.from_path(file_name, path, channel=CHANNEL)
        return await self._guarded(file_name, lambda: self._deliver(outgoing))

    async def fetch_responses(self, file_name: str | None = None) -> list[ResponseFile]:
        """Every answer the receiver holds (only those to `file_name` if given), by name."""
        if file_name is not None:
            check_file_name(file_name, channel=CHANNEL)
        return await self._guarded(file_name, lambda: self._fetch(file_name))

    # -- internals ------------------------------------------------------------------------------

    def _tls(self) -> ssl.SSLContext:
        e = self.endpoint
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(e.ca_file))
            if e.client_cert is not None:
                context.load_cert_chain(str(e.client_cert), str(e.client_key) if e.client_key else None,
                                        password=e.client_key_passphrase)
        except (OSError, ssl.SSLError) as exc:
            raise PermanentDeliveryError(f"cannot load the CA or client certificate: {exc}", channel=CHANNEL) from exc
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def _session(self) -> aiohttp.ClientSession:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.endpoint.connect_timeout_s)
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._tls()), timeout=timeout)

    async def _guarded(self, file_name: str | None, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            return await asyncio.wait_for(operation(), self.endpoint.operation_timeout_s)
        except Exception as exc:
            error = classify_http_error(exc, file_name=file_name)
            if error is None or error is exc:
                raise
            raise error from exc

    def _url(self, path: str, name: str) -> str:
        return f"{self.endpoint.base_url.rstrip('/')}{path}/{quote(name, safe='')}"

    async def _deliver(self, outgoing: OutgoingFile) -> DeliveryReceipt:
        url = self._url(FILES_PATH, outgoing.name)
        headers = {DIGEST_HEADER: outgoing.sha256, "Content-Type": "application/octet-stream"}
        with contextlib.ExitStack() as files:
            # A file on disk is streamed by aiohttp (its length from fstat), never read whole.
            body = outgoing.data if outgoing.data is not None else files.enter_context(open(outgoing.path, "rb"))
            async with self._session() as session, session.put(url, data=body, headers=headers) as response:
                body_json = await _json(response)
        if response.status == 409:
            raise DeliveryConflict(channel=CHANNEL, file_name=outgoing.name, sha256=outgoing.sha256,
                                   existing_sha256=body_json.get("sha256"))
        if response.status not in (200, 201):
            raise status_error(response.status, body_json, file_name=outgoing.name)
        if body_json.get("sha256") != outgoing.sha256:
            # The receiver's own digest is the evidence we record; it must be of our bytes.
            raise PermanentDeliveryError(
                f"{outgoing.name}: receiver reports sha256 {body_json.get('sha256')!r}, we sent {outgoing.sha256}",
                channel=CHANNEL, file_name=outgoing.name,
            )
        outcome = Outcome.STORED if response.status == 201 else Outcome.ALREADY_DELIVERED
        return DeliveryReceipt(CHANNEL, outgoing.name, outgoing.sha256, outgoing.size, outcome, url)

    async def _fetch(self, file_name: str | None) -> list[ResponseFile]:
        base = self.endpoint.base_url.rstrip("/")
        params = {"file": file_name} if file_name is not None else None
        async with self._session() as session:
            async with session.get(f"{base}{RESPONSES_PATH}", params=params) as response:
                listing = await _json(response)
            if response.status != 200:
                raise status_error(response.status, listing, file_name=file_name)
            fetched = []
            for entry in sorted(listing.get("responses", []), key=lambda e: e["name"]):
                parsed = parse_response_name(entry["name"])
                if parsed is None or (file_name is not None and parsed[0] != file_name):
                    continue
                async with session.get(self._url(RESPONSES_PATH, entry["name"])) as response:
                    data = await response.read()
                    if response.status != 200:
                        raise status_error(response.status, {}, file_name=parsed[0])
                if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
                    raise RetryableDeliveryError(f"response {entry['name']} changed or arrived altered",
                                                 channel=CHANNEL, file_name=parsed[0])
                fetched.append(ResponseFile(entry["name"], parsed[0], parsed[1], data))
        return fetched


async def _json(response: aiohttp.ClientResponse) -> dict[str, Any]:
    """The JSON object of a response, or {} when it has none (e.g. a proxy's error page)."""
    try:
        value = await response.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        return {}
    return value if isinstance(value, dict) else {}
