"""Archive keys, retain-until normalisation and the adapter built from the settings."""

from __future__ import annotations

import datetime as dt

import pytest

from cdr_mediation.infra.archive import ArchiveError, archive_store, check_key
from cdr_mediation.infra.archive.s3 import MIN_PART_SIZE, ObjectLockArchive, S3Endpoint, utc_whole_second
from cdr_mediation.settings import Settings, SettingsError

UTC = dt.timezone.utc


@pytest.mark.parametrize("key", ["cold/cdr/op-a/000000000001-000000000100.jsonl.gz", "exports/op_a/2026-11-21/x.zip",
                                 "a", "day=2026-11-21/f.p7s"])
def test_keys_this_system_writes_are_accepted(key):
    assert check_key(key) == key


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/../b", "a/./b", "a/", ".hidden", "a b", "a\nb", "ü",
                                 "x" * 1025])
def test_keys_that_could_alias_or_escape_are_refused_permanently(key):
    with pytest.raises(ArchiveError) as caught:
        check_key(key)
    assert not caught.value.retryable


def test_retain_until_dates_are_utc_and_rounded_up_to_a_second():
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert utc_whole_second(dt.datetime(2033, 1, 1, 2, 0, tzinfo=plus_two)) == dt.datetime(2033, 1, 1, tzinfo=UTC)
    # Never shortened: a fraction of a second becomes the next whole second.
    assert utc_whole_second(dt.datetime(2033, 1, 1, 0, 0, 0, 1, tzinfo=UTC)) == dt.datetime(2033, 1, 1, 0, 0, 1,
                                                                                             tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        utc_whole_second(dt.datetime(2033, 1, 1))


async def test_a_put_with_a_naive_retain_until_is_refused_before_any_request():
    # Port 1 is closed: reaching the network would raise ArchiveUnavailable instead.
    archive = ObjectLockArchive(S3Endpoint("http://127.0.0.1:1", "b", "us-east-1", "a", "s"))
    with pytest.raises(ValueError, match="timezone-aware"):
        await archive.put_bytes("k", b"x", retain_until=dt.datetime(2033, 1, 1))


def test_parts_smaller_than_s3_allows_are_refused():
    with pytest.raises(ValueError, match="at least"):
        ObjectLockArchive(S3Endpoint(None, "b", "us-east-1", "a", "s"), part_size=MIN_PART_SIZE - 1)


def test_the_store_comes_from_the_s3_settings_and_keeps_secrets_out_of_reprs():
    settings = Settings.load({"CDR_S3_ENDPOINT": "http://127.0.0.1:9000", "CDR_S3_BUCKET": "evidence",
                              "CDR_S3_REGION": "eu-west-1", "CDR_S3_ACCESS_KEY": "AKIDEXAMPLE",
                              "CDR_S3_SECRET_KEY": "very-secret-key"})
    endpoint = archive_store(settings).endpoint
    assert (endpoint.endpoint_url, endpoint.bucket, endpoint.region) == ("http://127.0.0.1:9000", "evidence",
                                                                         "eu-west-1")
    assert (endpoint.access_key, endpoint.secret_key) == ("AKIDEXAMPLE", "very-secret-key")
    assert "very-secret-key" not in repr(endpoint) and "AKIDEXAMPLE" not in repr(endpoint)
    assert archive_store(Settings.load({})).endpoint.endpoint_url is None  # AWS itself


def test_archive_retention_and_hot_window_settings():
    defaults = Settings.load({})
    assert (defaults.archive_retention_days, defaults.hot_window_months) == (2557, 13)
    assert defaults.cold_segment_max_rows == 1_000_000
    custom = Settings.load({"CDR_ARCHIVE_RETENTION_DAYS": "3653", "CDR_HOT_WINDOW_MONTHS": "6",
                            "CDR_COLD_SEGMENT_MAX_ROWS": "5000"})
    assert (custom.archive_retention_days, custom.hot_window_months, custom.cold_segment_max_rows) == (3653, 6, 5000)
    with pytest.raises(SettingsError, match="CDR_ARCHIVE_RETENTION_DAYS"):
        Settings.load({"CDR_ARCHIVE_RETENTION_DAYS": "0"})
    with pytest.raises(SettingsError, match="CDR_HOT_WINDOW_MONTHS"):
        Settings.load({"CDR_HOT_WINDOW_MONTHS": "0"})


async def test_a_missing_local_file_is_a_permanent_error_not_an_outage(tmp_path):
    archive = ObjectLockArchive(S3Endpoint("http://127.0.0.1:1", "b", "us-east-1", "a", "s"))
    with pytest.raises(ArchiveError, match="local file") as caught:
        await archive.put_file("k", tmp_path / "gone.zip", retain_until=dt.datetime(2033, 1, 1, tzinfo=UTC))
    assert not caught.value.retryable
