"""The S3 object-lock archive against the stack's real S3 endpoint (moto server, object lock on).

Every test writes under its own key prefix: the bucket is shared by the test session, and what
is archived under COMPLIANCE retention cannot be removed again — which is the point.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import time
import uuid

import boto3
import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from cdr_mediation.infra.archive import (
    ArchiveConflict,
    ArchiveObjectMissing,
    ArchiveOutcome,
    ArchiveUnavailable,
    ArchiveVerificationFailed,
    ObjectLockArchive,
    S3Endpoint,
    archive_store,
)
from cdr_mediation.infra.archive.s3 import MIN_PART_SIZE
from cdr_mediation.settings import Settings
from cdr_mediation.stack.process import free_port

UTC = dt.timezone.utc
RETAIN_UNTIL = dt.datetime(2033, 11, 22, tzinfo=UTC)


@pytest.fixture
def settings(stack_env) -> Settings:
    return Settings.load(stack_env)


@pytest.fixture
def archive(settings) -> ObjectLockArchive:
    return archive_store(settings)


@pytest.fixture
def raw_s3(settings):
    """A plain boto3 client: how an auditor (or an attacker) sees the bucket, without our adapter."""
    return boto3.client("s3", endpoint_url=settings.s3_endpoint, region_name=settings.s3_region,
                        aws_access_key_id=settings.s3_access_key.get_secret_value(),
                        aws_secret_access_key=settings.s3_secret_key.get_secret_value())


@pytest.fixture
def prefix() -> str:
    return f"test/{uuid.uuid4().hex}"


def versions(raw_s3, bucket: str, key: str) -> list[dict]:
    listing = raw_s3.list_object_versions(Bucket=bucket, Prefix=key)
    return [v for v in listing.get("Versions", []) if v["Key"] == key]


async def test_a_file_is_stored_under_compliance_retention_and_reads_back(archive, raw_s3, settings, prefix, tmp_path):
    source = tmp_path / "export.zip"
    source.write_bytes(os.urandom(200_000))
    stored = await archive.put_file(f"{prefix}/export.zip", source, retain_until=RETAIN_UNTIL)

    assert stored.outcome is ArchiveOutcome.STORED
    assert (stored.sha256, stored.size) == (hashlib.sha256(source.read_bytes()).hexdigest(), 200_000)
    assert (stored.retention_mode, stored.retain_until) == ("COMPLIANCE", RETAIN_UNTIL)
    # What S3 itself says, asked without our adapter.
    head = raw_s3.head_object(Bucket=settings.s3_bucket, Key=f"{prefix}/export.zip")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"].astimezone(UTC) == RETAIN_UNTIL
    assert head["Metadata"]["sha256"] == stored.sha256 and head["VersionId"] == stored.version_id

    restored = tmp_path / "restored.zip"
    fetched = await archive.get_file(f"{prefix}/export.zip", restored)
    assert restored.read_bytes() == source.read_bytes()
    assert (fetched.sha256, fetched.version_id) == (stored.sha256, stored.version_id)


async def test_the_same_bytes_again_are_already_archived_and_nothing_is_written(archive, raw_s3, settings, prefix):
    key = f"{prefix}/export.zip.p7s"
    first = await archive.put_bytes(key, b"signature bytes", retain_until=RETAIN_UNTIL)
    again = await archive.put_bytes(key, b"signature bytes", retain_until=RETAIN_UNTIL)
    assert (first.outcome, again.outcome) == (ArchiveOutcome.STORED, ArchiveOutcome.ALREADY_ARCHIVED)
    assert again.version_id == first.version_id
    assert len(versions(raw_s3, settings.s3_bucket, key)) == 1


async def test_other_bytes_under_an_archived_key_are_a_conflict_and_the_first_stays(archive, raw_s3, settings, prefix,
                                                                                     tmp_path):
    key = f"{prefix}/export.zip"
    first = await archive.put_bytes(key, b"the export as built", retain_until=RETAIN_UNTIL)
    with pytest.raises(ArchiveConflict) as caught:
        await archive.put_bytes(key, b"a different build", retain_until=RETAIN_UNTIL)
    assert not caught.value.retryable and caught.value.key == key
    assert caught.value.existing_sha256 == first.sha256
    assert len(versions(raw_s3, settings.s3_bucket, key)) == 1
    assert (await archive.get_file(key, tmp_path / "still.zip")).version_id == first.version_id
    assert (tmp_path / "still.zip").read_bytes() == b"the export as built"


async def test_a_compliance_locked_version_cannot_be_deleted(archive, raw_s3, settings, prefix):
    key = f"{prefix}/export.zip"
    stored = await archive.put_bytes(key, b"evidence", retain_until=RETAIN_UNTIL)
    with pytest.raises(ClientError) as refused:
        raw_s3.delete_object(Bucket=settings.s3_bucket, Key=key, VersionId=stored.version_id)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError):  # the governance bypass does not apply to COMPLIANCE
        raw_s3.delete_object(Bucket=settings.s3_bucket, Key=key, VersionId=stored.version_id,
                             BypassGovernanceRetention=True)
    assert (await archive.head(key)).version_id == stored.version_id


async def test_a_delete_marker_hides_nothing_from_the_archive(archive, raw_s3, settings, prefix):
    key = f"{prefix}/export.zip"
    stored = await archive.put_bytes(key, b"evidence", retain_until=RETAIN_UNTIL)
    raw_s3.delete_object(Bucket=settings.s3_bucket, Key=key)  # allowed: it only adds a delete marker
    assert (await archive.head(key)).version_id == stored.version_id
    again = await archive.put_bytes(key, b"evidence", retain_until=RETAIN_UNTIL)
    assert again.outcome is ArchiveOutcome.ALREADY_ARCHIVED and again.version_id == stored.version_id
    with pytest.raises(ArchiveConflict):
        await archive.put_bytes(key, b"other evidence", retain_until=RETAIN_UNTIL)
    assert len(versions(raw_s3, settings.s3_bucket, key)) == 1


async def test_head_of_a_missing_key_is_none_and_get_says_missing(archive, prefix, tmp_path):
    assert await archive.head(f"{prefix}/never-archived.zip") is None
    with pytest.raises(ArchiveObjectMissing):
        await archive.get_file(f"{prefix}/never-archived.zip", tmp_path / "x")
    assert not (tmp_path / "x").exists()


async def test_get_file_detects_bytes_that_are_not_the_archived_ones(archive, raw_s3, settings, prefix, tmp_path):
    key = f"{prefix}/export.zip"
    stored = await archive.put_bytes(key, b"the signed export", retain_until=RETAIN_UNTIL)
    # Someone writes other bytes under the key claiming the archived digest (a newer version:
    # object lock keeps the original, but a naive reader would fetch the newest).
    raw_s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=b"the forged export", ChecksumAlgorithm="SHA256",
                      Metadata={"sha256": stored.sha256})
    dest = tmp_path / "export.zip"
    with pytest.raises(ArchiveVerificationFailed, match="sha256"):
        await archive.get_file(key, dest)
    assert not dest.exists() and list(tmp_path.iterdir()) == [], "unverified bytes were left behind"
    with pytest.raises(ArchiveVerificationFailed):
        await archive.get_bytes(key)


async def test_a_file_larger_than_a_part_goes_up_in_parts_and_is_locked(settings, raw_s3, prefix, tmp_path):
    archive = ObjectLockArchive(archive_store(settings).endpoint, part_size=MIN_PART_SIZE)
    source = tmp_path / "segment.jsonl.gz"
    source.write_bytes(os.urandom(2 * MIN_PART_SIZE + 12_345))
    stored = await archive.put_file(f"{prefix}/segment.jsonl.gz", source, retain_until=RETAIN_UNTIL)
    assert stored.outcome is ArchiveOutcome.STORED and stored.size == source.stat().st_size
    head = raw_s3.head_object(Bucket=settings.s3_bucket, Key=f"{prefix}/segment.jsonl.gz")
    assert (head["ObjectLockMode"], head["ObjectLockRetainUntilDate"].astimezone(UTC)) == ("COMPLIANCE", RETAIN_UNTIL)
    assert (await archive.put_file(f"{prefix}/segment.jsonl.gz", source, retain_until=RETAIN_UNTIL)).outcome is \
        ArchiveOutcome.ALREADY_ARCHIVED
    await archive.get_file(f"{prefix}/segment.jsonl.gz", tmp_path / "back.gz")
    assert (tmp_path / "back.gz").read_bytes() == source.read_bytes()


async def test_concurrent_puts_of_the_same_bytes_store_one_version(archive, raw_s3, settings, prefix):
    key = f"{prefix}/export.zip"
    results = await asyncio.gather(*(archive.put_bytes(key, b"same bytes", retain_until=RETAIN_UNTIL)
                                     for _ in range(4)))
    assert sorted(r.outcome.value for r in results) == ["already_archived"] * 3 + ["stored"]
    assert len({r.version_id for r in results}) == 1
    assert len(versions(raw_s3, settings.s3_bucket, key)) == 1


async def test_retention_is_never_shortened_and_extended_when_more_is_asked(archive, raw_s3, settings, prefix):
    key = f"{prefix}/export.zip"
    await archive.put_bytes(key, b"evidence", retain_until=RETAIN_UNTIL)
    earlier = await archive.put_bytes(key, b"evidence", retain_until=RETAIN_UNTIL - dt.timedelta(days=1))
    assert earlier.outcome is ArchiveOutcome.ALREADY_ARCHIVED and earlier.retain_until == RETAIN_UNTIL
    # The retention setting was raised since the first upload: the object is kept longer.
    later = await archive.put_bytes(key, b"evidence", retain_until=RETAIN_UNTIL + dt.timedelta(days=365))
    assert later.retain_until == RETAIN_UNTIL + dt.timedelta(days=365)
    head = raw_s3.head_object(Bucket=settings.s3_bucket, Key=key)
    assert head["ObjectLockRetainUntilDate"].astimezone(UTC) == RETAIN_UNTIL + dt.timedelta(days=365)
    assert len(versions(raw_s3, settings.s3_bucket, key)) == 1


async def test_an_object_under_governance_retention_is_not_accepted_as_archived(archive, raw_s3, settings, prefix):
    key = f"{prefix}/export.zip"
    raw_s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=b"evidence", ChecksumAlgorithm="SHA256",
                      ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=RETAIN_UNTIL,
                      Metadata={"sha256": hashlib.sha256(b"evidence").hexdigest()})
    with pytest.raises(ArchiveVerificationFailed, match="not COMPLIANCE"):
        await archive.put_bytes(key, b"evidence", retain_until=RETAIN_UNTIL)


async def test_a_closed_port_is_unavailable_quickly(settings, prefix, tmp_path):
    endpoint = S3Endpoint(f"http://127.0.0.1:{free_port()}", settings.s3_bucket, settings.s3_region, "a", "s",
                          connect_timeout_s=1.0, read_timeout_s=1.0)
    archive = ObjectLockArchive(endpoint)
    source = tmp_path / "export.zip"
    source.write_bytes(b"evidence")
    started = time.monotonic()
    with pytest.raises(ArchiveUnavailable) as caught:
        await archive.put_file(f"{prefix}/export.zip", source, retain_until=RETAIN_UNTIL)
    assert time.monotonic() - started < 5
    assert caught.value.retryable and caught.value.__cause__ is not None
    with pytest.raises(ArchiveUnavailable):
        await archive.head(f"{prefix}/export.zip")


async def test_an_endpoint_that_never_answers_is_unavailable_within_the_read_timeout(settings, prefix):
    held: list[asyncio.StreamWriter] = []

    async def accept_and_stay_silent(reader, writer):
        held.append(writer)

    server = await asyncio.start_server(accept_and_stay_silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    archive = ObjectLockArchive(S3Endpoint(f"http://127.0.0.1:{port}", settings.s3_bucket, settings.s3_region,
                                           "a", "s", connect_timeout_s=0.5, read_timeout_s=0.5))
    started = time.monotonic()
    try:
        with pytest.raises(ArchiveUnavailable) as caught:
            await archive.put_bytes(f"{prefix}/export.zip", b"evidence", retain_until=RETAIN_UNTIL)
    finally:
        server.close()
        for writer in held:
            writer.close()
        await server.wait_closed()
    # Two attempts of 0.5 s and botocore's short backoff between them: seconds, not minutes.
    assert time.monotonic() - started < 5
    assert isinstance(caught.value.__cause__, ReadTimeoutError)
