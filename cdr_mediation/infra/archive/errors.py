"""What can go wrong when evidence is archived in S3, sorted by what the caller does next.

The exporter and the cold-tier job retry an archive step with backoff while S3 is down
(DESIGN.md §7: "archive retried; hot retention in PostgreSQL extends; alert"). They must know
from the exception alone whether a later attempt can succeed: `ArchiveUnavailable` (the endpoint
is down, slow, throttling or failed internally) or a permanent `ArchiveError` (we were refused,
the bucket is missing, other bytes are archived under the key, the read-back did not match):
retrying those only delays the alert a person must act on. The botocore exception is always
kept as ``__cause__``.
"""

from __future__ import annotations

import asyncio

from botocore import exceptions as boto

# S3 error codes after which the same request may succeed later (throttling, server-side
# failures, a conflicting operation still in progress).
RETRYABLE_CODES = frozenset({
    "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling", "ThrottlingException",
    "TooManyRequests", "TooManyRequestsException", "RequestLimitExceeded", "OperationAborted",
    "ConditionalRequestConflict", "BandwidthLimitExceeded",
})
_RETRYABLE_STATUSES = frozenset({408, 429})


class ArchiveError(Exception):
    """An archive operation failed and retrying it unchanged cannot succeed: a person must act.

    `key` is the object key concerned (None when the failure is not about one object)."""

    retryable: bool = False

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class ArchiveUnavailable(ArchiveError):
    """S3 could not be reached or could not serve the request now: connection refused or reset,
    a connect/read time-out, throttling (`SlowDown`) or a 5xx. Retry with backoff. A `put_*`
    that fails this way has not recorded anything as archived; repeating it is harmless."""

    retryable = True


class ArchiveObjectMissing(ArchiveError):
    """Nothing is archived under the key (a read of evidence that should be there)."""


class ArchiveConflict(ArchiveError):
    """Other bytes are already archived under the key.

    Object lock means they are never overwritten: either the content was rebuilt differently (a
    determinism bug) or the key was reused for something else. A person must find out which."""

    def __init__(self, *, key: str, sha256: str, existing_sha256: str) -> None:
        super().__init__(
            f"{key}: sha256 {existing_sha256} is already archived under this key; refusing to archive sha256 {sha256}",
            key=key,
        )
        self.sha256 = sha256
        self.existing_sha256 = existing_sha256


class ArchiveVerificationFailed(ArchiveError):
    """What S3 holds under the key is not what was put: the bytes read back hash differently,
    or the object is not under COMPLIANCE retention until the date asked for."""


def s3_error_code(exc: boto.ClientError) -> tuple[str, int]:
    """(S3 error code, HTTP status) of a ClientError."""
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    return str(error.get("Code", "")), int(status)


def classify_s3_error(exc: BaseException, *, key: str | None = None) -> ArchiveError | None:
    """The archive error a botocore/OS exception stands for; None for anything else (a bug)."""
    if isinstance(exc, ArchiveError):
        return exc
    if isinstance(exc, boto.ClientError):
        code, status = s3_error_code(exc)
        message = f"S3 {code or status}: {exc.response.get('Error', {}).get('Message', '') or exc}"
        if code in RETRYABLE_CODES or status >= 500 or status in _RETRYABLE_STATUSES:
            return ArchiveUnavailable(message, key=key)
        return ArchiveError(message, key=key)
    if isinstance(exc, boto.SSLError):
        # A certificate that does not verify fails the same way next time: configuration.
        return ArchiveError(f"TLS: {exc}", key=key)
    if isinstance(exc, (boto.ConnectionError, boto.HTTPClientError, boto.IncompleteReadError)):
        # EndpointConnectionError, ConnectTimeoutError (ConnectionError); ReadTimeoutError,
        # ConnectionClosedError, ResponseStreamingError (HTTPClientError); a body cut short.
        return ArchiveUnavailable(f"{type(exc).__name__}: {exc}", key=key)
    if isinstance(exc, (asyncio.TimeoutError, OSError)):  # reset, unreachable, TimeoutError
        reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else f"{type(exc).__name__}: {exc}"
        return ArchiveUnavailable(reason, key=key)
    if isinstance(exc, (boto.NoCredentialsError, boto.PartialCredentialsError, boto.ParamValidationError,
                        boto.BotoCoreError)):
        return ArchiveError(f"{type(exc).__name__}: {exc}", key=key)
    return None
