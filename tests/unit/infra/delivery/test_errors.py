"""The error classes the export lifecycle acts on: retry with backoff, or a person must act."""

from __future__ import annotations

from cdr_mediation.infra.delivery import (
    AccessRefused,
    DeliveryConflict,
    DeliveryError,
    EndpointUnavailable,
    InvalidFileName,
    PermanentDeliveryError,
    RetryableDeliveryError,
)


def test_retryability_follows_the_class():
    assert EndpointUnavailable("down", channel="sftp").retryable
    assert RetryableDeliveryError("503", channel="https").retryable
    for permanent in (AccessRefused("no", channel="sftp"), InvalidFileName("..", channel="https"),
                      PermanentDeliveryError("bad URL", channel="https")):
        assert isinstance(permanent, DeliveryError) and not permanent.retryable


def test_a_delivery_error_names_its_channel_and_file():
    error = EndpointUnavailable("timed out", channel="sftp", file_name="CDAFGAWAFGRA00042")
    assert str(error) == "sftp: timed out"
    assert (error.channel, error.file_name) == ("sftp", "CDAFGAWAFGRA00042")


def test_a_conflict_names_both_digests_and_is_permanent():
    conflict = DeliveryConflict(channel="sftp", file_name="f.zip", sha256="b" * 64, existing_sha256="a" * 64)
    assert isinstance(conflict, PermanentDeliveryError) and not conflict.retryable
    assert str(conflict) == (f"sftp: f.zip: the receiver already holds sha256 {'a' * 64} under this name; "
                             f"refusing to deliver sha256 {'b' * 64}")
    unknown = DeliveryConflict(channel="https", file_name="f.zip", sha256="b" * 64, existing_sha256=None)
    assert "already holds different bytes" in str(unknown)
