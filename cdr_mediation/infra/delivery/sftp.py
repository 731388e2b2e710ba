"""Delivery to the regulator's SFTP drop box (asyncssh): public-key login, strict host key.

One delivery = one connection: log in with our key, refuse any host key not in the configured
known_hosts file, then

1. if the final name exists, hash what is there: the same SHA-256 means this export was
   delivered before (`ALREADY_DELIVERED`, nothing is written); other bytes are a
   `DeliveryConflict`, never an overwrite;
2. write the bytes to a hidden temporary name (`files.temporary_name`) and check its size;
3. rename it to the final name. SFTP's plain rename does not replace an existing file
   (OpenSSH links, then unlinks), so if a concurrent delivery won the race, step 1's rule
   decides between "already delivered" and conflict.

The receiver only ever sees complete files under final names. Errors come out as the typed
exceptions of `errors.py` so the lifecycle knows whether to retry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import asyncssh

from cdr_mediation.infra.delivery.errors import (
    AccessRefused,
    DeliveryConflict,
    DeliveryError,
    EndpointUnavailable,
    PermanentDeliveryError,
    RetryableDeliveryError,
)
from cdr_mediation.infra.delivery.files import CHUNK_SIZE, OutgoingFile, parse_response_name, temporary_name
from cdr_mediation.infra.delivery.results import DeliveryReceipt, Outcome, ResponseFile

CHANNEL = "sftp"
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class SftpEndpoint:
    """Where and as whom to deliver (the CDR_SFTP_* settings; `cdrmed stack env` for the local stack)."""

    host: str
    port: int
    user: str
    client_key: Path
    known_hosts: Path
    remote_dir: str = "inbox"  # relative to the login directory of the drop box
    responses_dir: str = "outbox"
    connect_timeout_s: float = 10.0
    # One whole delivery (login, existence check, upload, rename); a large export needs minutes.
    operation_timeout_s: float = 600.0


# Refusals that a second attempt with the same configuration meets again.
_PERMANENT_DISCONNECTS = (asyncssh.KeyExchangeFailed, asyncssh.ProtocolNotSupported, asyncssh.IllegalUserName)
_PERMANENT_SFTP = (
    asyncssh.SFTPPermissionDenied, asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath, asyncssh.SFTPNotADirectory,
    asyncssh.SFTPWriteProtect, asyncssh.SFTPInvalidFilename, asyncssh.SFTPOpUnsupported,
)


def classify_ssh_error(exc: BaseException, *, file_name: str | None = None) -> DeliveryError | None:
    """The delivery error an asyncssh/OS exception stands for; None for anything else (a bug)."""
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, (asyncssh.PermissionDenied, asyncssh.HostKeyNotVerifiable)):
        return AccessRefused(f"{type(exc).__name__}: {exc}", channel=CHANNEL, file_name=file_name)
    if isinstance(exc, _PERMANENT_DISCONNECTS):
        return PermanentDeliveryError(f"{type(exc).__name__}: {exc}", channel=CHANNEL, file_name=file_name)
    if isinstance(exc, (asyncssh.DisconnectError, asyncssh.ChannelOpenError, asyncssh.SFTPConnectionLost,
                        asyncssh.SFTPNoConnection)):
        return EndpointUnavailable(f"{type(exc).__name__}: {exc}", channel=CHANNEL, file_name=file_name)
    if isinstance(exc, _PERMANENT_SFTP):
        return PermanentDeliveryError(f"{type(exc).__name__}: {exc}", channel=CHANNEL, file_name=file_name)
    if isinstance(exc, asyncssh.SFTPError):
        # Server-side failures such as a full disk: the operator of the endpoint can fix them.
        return RetryableDeliveryError(f"{type(exc).__name__}: {exc}", channel=CHANNEL, file_name=file_name)
    if isinstance(exc, OSError):  # refused, reset, unreachable, and TimeoutError
        reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        return EndpointUnavailable(reason, channel=CHANNEL, file_name=file_name)
    return None


class SftpDelivery:
    """Deliver export files to, and fetch answers from, one SFTP drop box."""

    channel = CHANNEL

    def __init__(self, endpoint: SftpEndpoint) -> None:
        self.endpoint = endpoint

    async def deliver(self, file_name: str, data: bytes) -> DeliveryReceipt:
        """Hand `data` over under `file_name`, at most once (see the module docstring)."""
        return await self._guarded(file_name, lambda: self._deliver(OutgoingFile.from_bytes(file_name, data,
                                                                                            channel=CHANNEL)))

    async def deliver_file(self, file_name: str, path: Path) -> DeliveryReceipt:
        """`deliver` for a file on disk, streamed in chunks (large exports)."""
        outgoing = OutgoingFile.from_path(file_name, path, channel=CHANNEL)
        return await self._guarded(file_name, lambda: self._deliver(outgoing))

    async def fetch_responses(self, file_name: str | None = None) -> list[ResponseFile]:
        """Every answer file in the responses directory (only those to `file_name` if given), by name."""
        return await self._guarded(file_name, lambda: self._fetch(file_name))

    # -- internals ------------------------------------------------------------------------------

    async def _guarded(self, file_name: str | None, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            return await asyncio.wait_for(operation(), self.endpoint.operation_timeout_s)
        except Exception as exc:
            error = classify_ssh_error(exc, file_name=file_name)
            if error is None or error is exc:
                raise
            raise error from exc

    def _credentials(self) -> tuple[asyncssh.SSHKey, asyncssh.SSHKnownHosts]:
        # Read here, not by asyncssh during connect: a missing key is configuration, not an outage.
        try:
            key = asyncssh.read_private_key(str(self.endpoint.client_key))
            known_hosts = asyncssh.read_known_hosts(str(self.endpoint.known_hosts))
        except (OSError, asyncssh.KeyImportError) as exc:
            raise PermanentDeliveryError(f"cannot read client key or known_hosts: {exc}", channel=CHANNEL) from exc
        return key, known_hosts

    async def _connect(self) -> asyncssh.SSHClientConnection:
        key, known_hosts = self._credentials()
        return await asyncssh.connect(
            self.endpoint.host, port=self.endpoint.port, username=self.endpoint.user,
            client_keys=[key], known_hosts=known_hosts,
            # Only what is configured here: no agent, no ~/.ssh/config, no password prompts.
            agent_path=None, config=None, password=None, kbdint_auth=False, preferred_auth="publickey",
            connect_timeout=self.endpoint.connect_timeout_s,
        )

    def _location(self, name: str) -> str:
        e = self.endpoint
        return f"sftp://{e.user}@{e.host}:{e.port}/{e.remote_dir}/{name}"

    async def _deliver(self, outgoing: OutgoingFile) -> DeliveryReceipt:
        final = f"{self.endpoint.remote_dir}/{outgoing.name}"
        temporary = f"{self.endpoint.remote_dir}/{temporary_name(outgoing.name, outgoing.sha256)}"
        async with await self._connect() as conn, conn.start_sftp_client() as sftp:
            existing = await _digest_of(sftp, final)
            if existing is not None:
                return self._settle(outgoing, existing)
            async with sftp.open(temporary, "wb") as remote:
                offset = 0
                for chunk in outgoing.chunks():
                    await remote.write(chunk, offset)
                    offset += len(chunk)
            written = (await sftp.stat(temporary)).size
            if written != outgoing.size:
                await _remove_quietly(sftp, temporary)
                raise RetryableDeliveryError(f"{outgoing.name}: {written} bytes arrived of {outgoing.size}",
                                             channel=CHANNEL, file_name=outgoing.name)
            try:
                await sftp.rename(temporary, final)
            except asyncssh.SFTPError:
                existing = await _digest_of(sftp, final)
                if existing is None:
                    raise
                await _remove_quietly(sftp, temporary)
                return self._settle(outgoing, existing)
        return DeliveryReceipt(CHANNEL, outgoing.name, outgoing.sha256, outgoing.size, Outcome.STORED,
                               self._location(outgoing.name))

    def _settle(self, outgoing: OutgoingFile, existing_sha256: str) -> DeliveryReceipt:
        """The final name is taken: by these bytes (done before) or by others (conflict)."""
        if existing_sha256 != outgoing.sha256:
            raise DeliveryConflict(channel=CHANNEL, file_name=outgoing.name, sha256=outgoing.sha256,
                                   existing_sha256=existing_sha256)
        return DeliveryReceipt(CHANNEL, outgoing.name, outgoing.sha256, outgoing.size, Outcome.ALREADY_DELIVERED,
                               self._location(outgoing.name))

    async def _fetch(self, file_name: str | None) -> list[ResponseFile]:
        directory = self.endpoint.responses_dir
        async with await self._connect() as conn, conn.start_sftp_client() as sftp:
            responses = []
            for name in sorted(await sftp.listdir(directory)):
                parsed = parse_response_name(name)
                if parsed is None or (file_name is not None and parsed[0] != file_name):
                    continue
                async with sftp.open(f"{directory}/{name}", "rb") as remote:
                    data = await remote.read()
                responses.append(ResponseFile(name, parsed[0], parsed[1], data))
        return responses


async def _digest_of(sftp: asyncssh.SFTPClient, path: str) -> str | None:
    """SHA-256 of the remote file at `path`, None if there is none."""
    try:
        remote = await sftp.open(path, "rb")
    except asyncssh.SFTPNoSuchFile:
        return None
    digest = hashlib.sha256()
    async with remote:
        while chunk := await remote.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


async def _remove_quietly(sftp: asyncssh.SFTPClient, path: str) -> None:
    try:
        await sftp.remove(path)
    except asyncssh.SFTPError:
        pass  # a leftover temporary name is overwritten by the next attempt with these bytes
