"""What the callers of the archive act on: retry with backoff, or a person must act."""

from __future__ import annotations

import asyncio

import pytest
from botocore import exceptions as boto

from cdr_mediation.infra.archive import (
    ArchiveConflict,
    ArchiveError,
    ArchiveUnavailable,
    ArchiveVerificationFailed,
    classify_s3_error,
)


def client_error(code: str, status: int, operation: str = "PutObject") -> boto.ClientError:
    return boto.ClientError({"Error": {"Code": code, "Message": f"{code} happened"},
                             "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


@pytest.mark.parametrize("exc", [
    boto.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
    boto.ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"),
    boto.ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
    boto.ConnectionClosedError(endpoint_url="http://127.0.0.1:1"),
    boto.ResponseStreamingError(error="connection reset while reading the body"),
    boto.IncompleteReadError(actual_bytes=10, expected_bytes=20),
    ConnectionResetError("reset by peer"),
    asyncio.TimeoutError(),
    client_error("SlowDown", 503),
    client_error("InternalError", 500),
    client_error("ServiceUnavailable", 503),
    client_error("RequestTimeout", 400),
    client_error("Throttling", 400),
    client_error("", 502),  # a proxy's error page: no S3 code at all
    client_error("TooManyRequests", 429),
], ids=lambda e: type(e).__name__ + ":" + (e.response["Error"]["Code"] or str(e.response["ResponseMetadata"]["HTTPStatusCode"]) if isinstance(e, boto.ClientError) else ""))
def test_outages_throttling_and_server_errors_are_retryable(exc):
    error = classify_s3_error(exc, key="exports/a.zip")
    assert isinstance(error, ArchiveUnavailable) and error.retryable
    assert error.key == "exports/a.zip"


@pytest.mark.parametrize("exc", [
    client_error("AccessDenied", 403),
    client_error("NoSuchBucket", 404),
    client_error("InvalidRequest", 400),
    client_error("InvalidAccessKeyId", 403),
    client_error("SignatureDoesNotMatch", 403),
    client_error("InvalidBucketState", 409),
    boto.NoCredentialsError(),
    boto.ParamValidationError(report="Invalid type for parameter Key"),
    boto.SSLError(endpoint_url="https://s3.example", error="certificate verify failed"),
])
def test_refusals_and_configuration_errors_are_permanent(exc):
    error = classify_s3_error(exc, key="k")
    assert isinstance(error, ArchiveError) and not isinstance(error, ArchiveUnavailable)
    assert not error.retryable


def test_the_s3_code_and_message_are_in_the_error_text():
    error = classify_s3_error(client_error("AccessDenied", 403), key="k")
    assert str(error) == "S3 AccessDenied: AccessDenied happened"


def test_anything_else_is_not_classified_so_bugs_surface():
    assert classify_s3_error(KeyError("VersionId")) is None
    assert classify_s3_error(TypeError("bad call")) is None


def test_an_archive_error_passes_through_unchanged():
    conflict = ArchiveConflict(key="k", sha256="b" * 64, existing_sha256="a" * 64)
    assert classify_s3_error(conflict) is conflict


def test_conflict_and_verification_failure_are_permanent_and_name_the_key():
    conflict = ArchiveConflict(key="cold/x", sha256="b" * 64, existing_sha256="a" * 64)
    assert not conflict.retryable and conflict.key == "cold/x"
    assert str(conflict) == (f"cold/x: sha256 {'a' * 64} is already archived under this key; "
                             f"refusing to archive sha256 {'b' * 64}")
    failed = ArchiveVerificationFailed("read back differs", key="cold/x")
    assert not failed.retryable and failed.key == "cold/x"
