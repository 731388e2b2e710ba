"""The S3 object-lock archive (aioboto3): evidence stored once, under COMPLIANCE retention, read back.

One `put_file` / `put_bytes`:

1. if the key already holds an object (also one hidden behind a delete marker: a delete marker
   hides a locked version, it does not remove it), compare its recorded SHA-256 with ours —
   the same means an earlier attempt archived these bytes (`ALREADY_ARCHIVED`, nothing is
   written); other bytes are an `ArchiveConflict`, never a second version;
2. otherwise upload with ``ObjectLockMode=COMPLIANCE`` and the retain-until date asked for, the
   digest as object metadata (``x-amz-meta-sha256``) and as S3's own ``ChecksumSHA256`` (S3
   refuses a body that arrives altered), and ``If-None-Match: *`` so a concurrent writer cannot
   slip a second version in between (the loser settles as in step 1). A file larger than one
   part goes up as a multipart upload, one part in memory at a time;
3. read the version back: its retention must be COMPLIANCE until that date, and the bytes
   fetched again must hash to our digest — otherwise `ArchiveVerificationFailed`. An object that
   step 1 found is checked the same way (an earlier attempt may have crashed before its own
   check), except that a retention *longer* than asked is accepted: it keeps the evidence at
   least as long as required.

A version that carries no lock at all (S3 applies the lock given at CreateMultipartUpload; moto
ignores it there), or whose COMPLIANCE retention ends before the date asked for (the retention
setting was raised since), gets the date set with PutObjectRetention before the check: COMPLIANCE
retention can be extended, never shortened, so this only ever keeps evidence longer.

Errors come out as the typed exceptions of `errors.py` (retryable `ArchiveUnavailable` or a
permanent `ArchiveError`). botocore retries once at most; the caller retries with backoff.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import ClientError

from cdr_mediation.infra.file_digest import file_sha256_and_size
from cdr_mediation.infra.archive.errors import (
    ArchiveConflict,
    ArchiveError,
    ArchiveObjectMissing,
    ArchiveUnavailable,
    ArchiveVerificationFailed,
    classify_s3_error,
    s3_error_code,
)
from cdr_mediation.infra.archive.results import (
    COMPLIANCE,
    NOT_LOCKED_MODE,
    NOT_LOCKED_UNTIL,
    ArchivedObject,
    ArchiveOutcome,
)

T = TypeVar("T")
SHA256_METADATA = "sha256"  # sent as x-amz-meta-sha256
# One read of a body or a file: big enough to amortise calls, small enough to never matter.
CHUNK_SIZE = 1 << 20
# Files up to one part are a single PutObject; larger ones a multipart upload of such parts
# (S3 allows 10,000 parts: 640 GB at 64 MiB). Only one part is in memory at a time.
DEFAULT_PART_SIZE = 64 << 20
MIN_PART_SIZE = 5 << 20  # S3's minimum for every part but the last
# Object keys this system writes: no leading or doubled "/", no "." or ".." segments, nothing
# that needs escaping in a URL or a shell.
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=-]*(/[A-Za-z0-9][A-Za-z0-9._=-]*)*")
_UTC = dt.timezone.utc


@dataclasses.dataclass(frozen=True)
class S3Endpoint:
    """Where the archive bucket is and who we are there (the CDR_S3_* settings)."""

    endpoint_url: str | None  # None: AWS itself; else e.g. the local stack's moto server
    bucket: str
    region: str
    access_key: str = dataclasses.field(repr=False)
    secret_key: str = dataclasses.field(repr=False)
    connect_timeout_s: float = 5.0
    # Per socket read, not per transfer: a large upload may take long as long as bytes move.
    read_timeout_s: float = 60.0


def check_key(key: str) -> str:
    """`key` if this archive may use it as an object key, else a permanent ArchiveError."""
    if not isinstance(key, str) or len(key) > 1024 or not _KEY.fullmatch(key) or ".." in key:
        raise ArchiveError(f"{key!r} is not an archive key (letters, digits, '.', '_', '=', '-' in '/'-separated "
                           "segments that start with a letter or digit; no '..')", key=str(key))
    return key


def utc_whole_second(moment: dt.datetime) -> dt.datetime:
    """`moment` in UTC rounded up to a whole second (S3 keeps retain-until dates in seconds)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("retain_until must be timezone-aware")
    utc = moment.astimezone(_UTC)
    return utc if not utc.microsecond else utc.replace(microsecond=0) + dt.timedelta(seconds=1)


@dataclasses.dataclass(frozen=True)
class _Payload:
    """The bytes to archive, from memory or a file on disk, with their digest.

    A file is hashed once before the upload (the digest travels in the upload's metadata) and
    re-hashed as it is sent: if it changed in between, the upload is abandoned, not archived."""

    sha256: str
    size: int
    data: bytes | None = None
    path: Path | None = None

    @classmethod
    def of_bytes(cls, data: bytes) -> "_Payload":
        data = bytes(data)
        return cls(hashlib.sha256(data).hexdigest(), len(data), data=data)

    @classmethod
    async def of_file(cls, path: Path) -> "_Payload":
        with _local_file(path):
            sha256, size = await asyncio.to_thread(file_sha256_and_size, Path(path))
        return cls(sha256, size, path=Path(path))

    async def read(self, offset: int, length: int) -> bytes:
        if self.data is not None:
            return self.data[offset:offset + length]
        assert self.path is not None
        with _local_file(self.path):
            return await asyncio.to_thread(_read_range, self.path, offset, length)


@contextlib.contextmanager
def _local_file(path: Path):
    """Errors of our own disk (missing file, no space, no permission) are not S3 outages: they
    come out as a permanent ArchiveError naming the local path, never as `ArchiveUnavailable`."""
    try:
        yield
    except OSError as exc:
        raise ArchiveError(f"local file {path}: {type(exc).__name__}: {exc}") from exc


def _read_range(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as source:
        source.seek(offset)
        return source.read(length)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


@dataclasses.dataclass(frozen=True)
class _Version:
    """What a HEAD of one object version tells."""

    version_id: str | None
    size: int
    sha256: str  # recorded at upload; "" if the object carries none (not written by us)
    retention_mode: str
    retain_until: dt.datetime

    @classmethod
    def from_head(cls, head: dict[str, Any]) -> "_Version":
        until = head.get("ObjectLockRetainUntilDate")
        mode = head.get("ObjectLockMode") or NOT_LOCKED_MODE
        return cls(
            version_id=head.get("VersionId"),
            size=int(head.get("ContentLength", 0)),
            sha256=str(head.get("Metadata", {}).get(SHA256_METADATA, "")).lower(),
            retention_mode=mode,
            retain_until=until.astimezone(_UTC) if isinstance(until, dt.datetime) and mode else NOT_LOCKED_UNTIL,
        )


class ObjectLockArchive:
    """Archive files under COMPLIANCE object lock in one bucket, and read them back verified."""

    def __init__(self, endpoint: S3Endpoint, *, part_size: int = DEFAULT_PART_SIZE) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum part)")
        self.endpoint = endpoint
        self.part_size = part_size
        self._session = aioboto3.Session(
            aws_access_key_id=endpoint.access_key, aws_secret_access_key=endpoint.secret_key,
            region_name=endpoint.region,
        )
        self._config = AioConfig(
            connect_timeout=endpoint.connect_timeout_s, read_timeout=endpoint.read_timeout_s,
            # One quick retry absorbs a pooled connection the server had closed; anything longer
            # is the caller's backoff, which also counts and reports the failures.
            retries={"total_max_attempts": 2, "mode": "standard"},
            # We send and check our own SHA-256; no second CRC over every body.
            request_checksum_calculation="when_required", response_checksum_validation="when_required",
        )

    # -- the surface --------------------------------------------------------------------------

    async def put_file(self, key: str, path: Path, *, retain_until: dt.datetime) -> ArchivedObject:
        """Archive the file at `path` under `key` (see the module docstring); it must not change
        until this returns."""
        check_key(key)
        until = utc_whole_second(retain_until)
        payload = await _Payload.of_file(path)
        return await self._guarded(key, lambda: self._put(key, payload, until))

    async def put_bytes(self, key: str, data: bytes, *, retain_until: dt.datetime) -> ArchivedObject:
        check_key(key)
        until = utc_whole_second(retain_until)
        return await self._guarded(key, lambda: self._put(key, _Payload.of_bytes(data), until))

    async def head(self, key: str) -> ArchivedObject | None:
        """What is archived under `key` (its newest version), None if nothing is."""
        check_key(key)

        async def head() -> ArchivedObject | None:
            async with self._client() as s3:
                version = await self._current(s3, key)
                if version is None:
                    return None
                sha256 = version.sha256 or (await self._digest_of(s3, key, version.version_id))[0]
            return self._archived(key, version, sha256, ArchiveOutcome.ALREADY_ARCHIVED)

        return await self._guarded(key, head)

    async def get_file(self, key: str, dest: Path) -> ArchivedObject:
        """Download what is archived under `key` to `dest`, verified against its recorded SHA-256.

        The bytes land under a hidden name beside `dest` and are renamed only once they hash
        right, so `dest` never holds unverified evidence."""
        check_key(key)
        return await self._guarded(key, lambda: self._get_file(key, Path(dest)))

    async def get_bytes(self, key: str, *, max_size: int = 64 << 20) -> tuple[bytes, ArchivedObject]:
        """`get_file` for small objects (manifests): the verified bytes in memory."""
        check_key(key)
        return await self._guarded(key, lambda: self._get_bytes(key, max_size))

    async def read_chunks(self, key: str, *, version_id: str | None = None) -> AsyncIterator[bytes]:
        """The bytes of one archived version (the newest if `version_id` is None), as they arrive,
        **unverified**: for a caller that streams them on and checks them against a digest it
        recorded itself (the portal's download), holding at most one chunk. Errors come out
        typed, as from every other method."""
        check_key(key)
        try:
            async with self._client() as s3:
                async for chunk in self._body(s3, key, version_id):
                    yield chunk
        except Exception as exc:
            error = classify_s3_error(exc, key=key)
            if error is None or error is exc:
                raise
            raise error from exc

    # -- internals ----------------------------------------------------------------------------

    def _client(self):
        return self._session.client("s3", endpoint_url=self.endpoint.endpoint_url, config=self._config)

    async def _guarded(self, key: str, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            return await operation()
        except Exception as exc:
            error = classify_s3_error(exc, key=key)
            if error is None or error is exc:
                raise
            raise error from exc

    def _archived(self, key: str, version: _Version, sha256: str, outcome: ArchiveOutcome) -> ArchivedObject:
        return ArchivedObject(key=key, sha256=sha256, size=version.size, version_id=version.version_id,
                              retention_mode=version.retention_mode, retain_until=version.retain_until,
                              outcome=outcome)

    async def _put(self, key: str, payload: _Payload, until: dt.datetime) -> ArchivedObject:
        async with self._client() as s3:
            existing = await self._current(s3, key)
            if existing is None:
                try:
                    version_id = await self._upload(s3, key, payload, until)
                except _KeyTaken:
                    # A concurrent writer created the key between our HEAD and our upload.
                    existing = await self._current(s3, key)
                else:
                    version = await self._verified(s3, key, version_id, payload, until, exact=True)
                    return self._archived(key, version, payload.sha256, ArchiveOutcome.STORED)
                if existing is None:
                    raise ArchiveUnavailable(f"{key}: S3 refused the upload as existing, but holds no object",
                                             key=key)
            recorded = existing.sha256 or (await self._digest_of(s3, key, existing.version_id))[0]
            if recorded != payload.sha256:
                raise ArchiveConflict(key=key, sha256=payload.sha256, existing_sha256=recorded)
            version = await self._verified(s3, key, existing.version_id, payload, until, exact=False)
            return self._archived(key, version, payload.sha256, ArchiveOutcome.ALREADY_ARCHIVED)

    async def _current(self, s3, key: str) -> _Version | None:
        """The newest version under `key`, looking through a delete marker; None if none."""
        try:
            return _Version.from_head(await s3.head_object(Bucket=self.endpoint.bucket, Key=key))
        except ClientError as exc:
            code, status = s3_error_code(exc)
            if status != 404 and code not in ("404", "NoSuchKey", "NotFound"):
                raise
            headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
            if str(headers.get("x-amz-delete-marker", "")).lower() != "true":
                return None
        return await self._newest_hidden_version(s3, key)

    async def _newest_hidden_version(self, s3, key: str) -> _Version | None:
        newest: dict[str, Any] | None = None
        paginator = s3.get_paginator("list_object_versions")
        async for page in paginator.paginate(Bucket=self.endpoint.bucket, Prefix=key):
            for version in page.get("Versions", []):
                if version["Key"] == key and (newest is None or version["LastModified"] > newest["LastModified"]):
                    newest = version
        if newest is None:
            return None
        return await self._head_version(s3, key, newest["VersionId"])

    async def _head_version(self, s3, key: str, version_id: str | None) -> _Version:
        extra = {"VersionId": version_id} if version_id else {}
        return _Version.from_head(await s3.head_object(Bucket=self.endpoint.bucket, Key=key, **extra))

    async def _upload(self, s3, key: str, payload: _Payload, until: dt.datetime) -> str | None:
        """Upload unless the key exists: the new version id (None if the bucket keeps no
        versions); `_KeyTaken` when S3 refused because an object appeared under the key meanwhile."""
        common = dict(
            Bucket=self.endpoint.bucket, Key=key, ContentType="application/octet-stream",
            Metadata={SHA256_METADATA: payload.sha256},
            ObjectLockMode=COMPLIANCE, ObjectLockRetainUntilDate=until,
        )
        if payload.size <= self.part_size:
            data = await payload.read(0, payload.size)
            digest = hashlib.sha256(data).digest()
            if digest.hex() != payload.sha256 or len(data) != payload.size:
                raise ArchiveVerificationFailed(f"{key}: the file changed while it was being archived", key=key)
            try:
                response = await s3.put_object(Body=data, ChecksumAlgorithm="SHA256", ChecksumSHA256=_b64(digest),
                                               IfNoneMatch="*", **common)
            except ClientError as exc:
                if _precondition_failed(exc):
                    raise _KeyTaken from exc
                raise
            return response.get("VersionId")
        return await self._multipart_upload(s3, key, payload, common)

    async def _multipart_upload(self, s3, key: str, payload: _Payload, common: dict[str, Any]) -> str | None:
        upload_id = (await s3.create_multipart_upload(ChecksumAlgorithm="SHA256", **common))["UploadId"]
        try:
            parts, whole, sent = [], hashlib.sha256(), 0
            for number, offset in enumerate(range(0, payload.size, self.part_size), start=1):
                chunk = await payload.read(offset, self.part_size)
                part_digest = await asyncio.to_thread(_hash_part, whole, chunk)
                sent += len(chunk)
                response = await s3.upload_part(
                    Bucket=self.endpoint.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk,
                    ChecksumAlgorithm="SHA256", ChecksumSHA256=_b64(part_digest))
                parts.append({"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": _b64(part_digest)})
            if whole.hexdigest() != payload.sha256 or sent != payload.size:
                raise ArchiveVerificationFailed(f"{key}: the file changed while it was being archived", key=key)
            response = await s3.complete_multipart_upload(
                Bucket=self.endpoint.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts},
                IfNoneMatch="*")
        except BaseException as exc:
            await self._abort(s3, key, upload_id)
            if isinstance(exc, ClientError) and _precondition_failed(exc):
                raise _KeyTaken from exc
            raise
        return response.get("VersionId")

    async def _abort(self, s3, key: str, upload_id: str) -> None:
        # Best effort, and shielded from a cancellation in progress: an upload left open holds
        # storage (not evidence: it is invisible until completed); a lifecycle rule reaps it.
        with contextlib.suppress(Exception):
            await asyncio.shield(s3.abort_multipart_upload(Bucket=self.endpoint.bucket, Key=key, UploadId=upload_id))

    async def _verified(self, s3, key: str, version_id: str | None, payload: _Payload, until: dt.datetime, *,
                        exact: bool) -> _Version:
        """The version after checking retention, size, recorded digest and the bytes read back."""
        version = await self._head_version(s3, key, version_id)
        if version.retention_mode == NOT_LOCKED_MODE or (version.retention_mode == COMPLIANCE
                                                         and version.retain_until < until):
            # Lock a version that has no lock, or extend one that ends too early (COMPLIANCE
            # retention can be extended, never shortened): both only ever keep evidence longer.
            retention = {"Mode": COMPLIANCE, "RetainUntilDate": until}
            extra = {"VersionId": version.version_id} if version.version_id else {}
            await s3.put_object_retention(Bucket=self.endpoint.bucket, Key=key, Retention=retention, **extra)
            version = await self._head_version(s3, key, version.version_id)
        problems = []
        if version.retention_mode != COMPLIANCE:
            problems.append(f"retention mode {version.retention_mode or 'none'!r}, not COMPLIANCE")
        if version.retain_until != until and (exact or version.retain_until < until):
            problems.append(f"retained until {version.retain_until.isoformat()}, not {until.isoformat()}")
        if version.size != payload.size:
            problems.append(f"{version.size} bytes, not {payload.size}")
        if version.sha256 and version.sha256 != payload.sha256:
            problems.append(f"recorded sha256 {version.sha256}, not {payload.sha256}")
        if not problems:
            read_back, size = await self._digest_of(s3, key, version.version_id)
            if (read_back, size) != (payload.sha256, payload.size):
                problems.append(f"read back {size} bytes with sha256 {read_back}, put {payload.size} with "
                                f"{payload.sha256}")
        if problems:
            raise ArchiveVerificationFailed(f"{key} (version {version.version_id}): " + "; ".join(problems), key=key)
        return version

    async def _digest_of(self, s3, key: str, version_id: str | None) -> tuple[str, int]:
        """(SHA-256, size) of the version's bytes, fetched and hashed in chunks."""
        digest, size = hashlib.sha256(), 0
        async for chunk in self._body(s3, key, version_id):
            digest.update(chunk)
            size += len(chunk)
        return digest.hexdigest(), size

    async def _body(self, s3, key: str, version_id: str | None):
        extra = {"VersionId": version_id} if version_id else {}
        response = await s3.get_object(Bucket=self.endpoint.bucket, Key=key, **extra)
        body = response["Body"]
        async with body:  # releases the connection however the iteration ends
            async for chunk in body.iter_chunks(CHUNK_SIZE):
                yield chunk

    async def _existing_for_read(self, s3, key: str) -> _Version:
        version = await self._current(s3, key)
        if version is None:
            raise ArchiveObjectMissing(f"{key}: nothing is archived under this key", key=key)
        if not version.sha256:
            raise ArchiveVerificationFailed(f"{key}: the object carries no recorded sha256; it cannot be verified "
                                            "(not written by this archive)", key=key)
        return version

    async def _get_file(self, key: str, dest: Path) -> ArchivedObject:
        partial = dest.with_name(f".{dest.name}.part")
        async with self._client() as s3:
            version = await self._existing_for_read(s3, key)
            digest, size = hashlib.sha256(), 0
            try:
                with _local_file(partial):
                    sink = open(partial, "wb")
                with sink:
                    async for chunk in self._body(s3, key, version.version_id):
                        digest.update(chunk)
                        size += len(chunk)
                        with _local_file(partial):
                            sink.write(chunk)
                    with _local_file(partial):
                        sink.flush()
                        os.fsync(sink.fileno())
                _check_read(key, version, digest.hexdigest(), size)
                with _local_file(dest):
                    os.replace(partial, dest)
            finally:
                partial.unlink(missing_ok=True)
        return self._archived(key, version, version.sha256, ArchiveOutcome.ALREADY_ARCHIVED)

    async def _get_bytes(self, key: str, max_size: int) -> tuple[bytes, ArchivedObject]:
        async with self._client() as s3:
            version = await self._existing_for_read(s3, key)
            if version.size > max_size:
                raise ArchiveError(f"{key}: {version.size} bytes is more than {max_size} to hold in memory", key=key)
            chunks = [chunk async for chunk in self._body(s3, key, version.version_id)]
        data = b"".join(chunks)
        _check_read(key, version, hashlib.sha256(data).hexdigest(), len(data))
        return data, self._archived(key, version, version.sha256, ArchiveOutcome.ALREADY_ARCHIVED)


class _KeyTaken(Exception):
    """If-None-Match refused our upload: the key got an object after we looked."""


def _hash_part(whole: "hashlib._Hash", chunk: bytes) -> bytes:
    whole.update(chunk)
    return hashlib.sha256(chunk).digest()


def _check_read(key: str, version: _Version, sha256: str, size: int) -> None:
    if (sha256, size) != (version.sha256, version.size):
        raise ArchiveVerificationFailed(
            f"{key} (version {version.version_id}): read {size} bytes with sha256 {sha256}, but "
            f"{version.size} bytes with sha256 {version.sha256} were archived", key=key)


def _precondition_failed(exc: ClientError) -> bool:
    code, status = s3_error_code(exc)
    return code == "PreconditionFailed" or status == 412


def archive_store(settings) -> ObjectLockArchive:
    """The archive the CDR_S3_* settings describe."""
    return ObjectLockArchive(S3Endpoint(
        endpoint_url=settings.s3_endpoint or None, bucket=settings.s3_bucket, region=settings.s3_region,
        access_key=settings.s3_access_key.get_secret_value(), secret_key=settings.s3_secret_key.get_secret_value(),
    ))
