"""Which SSH/SFTP failures the export lifecycle retries and which need a person."""

from __future__ import annotations

from pathlib import Path

import asyncssh
import pytest

from cdr_mediation.infra.delivery import (
    AccessRefused,
    EndpointUnavailable,
    PermanentDeliveryError,
    RetryableDeliveryError,
)
from cdr_mediation.infra.delivery.sftp import SftpDelivery, SftpEndpoint, classify_ssh_error

RETRYABLE = [
    ConnectionRefusedError(111, "Connect call failed"),
    ConnectionResetError(104, "Connection reset by peer"),
    TimeoutError(),
    asyncssh.ConnectionLost("connection lost"),
    asyncssh.SFTPConnectionLost("lost"),
    asyncssh.SFTPNoSpaceOnFilesystem("disk full"),
    asyncssh.SFTPFailure("failure"),
]
PERMANENT = [
    (asyncssh.PermissionDenied("auth failed"), AccessRefused),
    (asyncssh.HostKeyNotVerifiable("host key is not trusted"), AccessRefused),
    (asyncssh.KeyExchangeFailed("no matching algorithm"), PermanentDeliveryError),
    (asyncssh.SFTPPermissionDenied("denied"), PermanentDeliveryError),
    (asyncssh.SFTPNoSuchFile("no inbox"), PermanentDeliveryError),
]


@pytest.mark.parametrize("exc", RETRYABLE, ids=lambda e: type(e).__name__)
def test_outages_are_retryable(exc):
    error = classify_ssh_error(exc, file_name="f.zip")
    assert isinstance(error, RetryableDeliveryError) and error.retryable
    assert error.channel == "sftp" and error.file_name == "f.zip"


@pytest.mark.parametrize(("exc", "kind"), PERMANENT, ids=lambda e: type(e).__name__)
def test_refusals_are_permanent(exc, kind):
    error = classify_ssh_error(exc)
    assert isinstance(error, kind) and not error.retryable


def test_timeouts_say_so_and_bugs_are_not_delivery_errors():
    assert str(classify_ssh_error(TimeoutError())) == "sftp: timed out"
    assert isinstance(classify_ssh_error(TimeoutError()), EndpointUnavailable)
    assert classify_ssh_error(KeyError("bug")) is None


async def test_a_missing_client_key_is_configuration_not_an_outage(tmp_path):
    # Read before connecting: retrying cannot make the key appear, so no connection is attempted.
    channel = SftpDelivery(SftpEndpoint("127.0.0.1", 1, "atra", tmp_path / "no-key", tmp_path / "no-known-hosts"))
    with pytest.raises(PermanentDeliveryError, match="cannot read client key") as refused:
        await channel.deliver("CDAFGAWAFGRA00042", b"x")
    assert not refused.value.retryable


async def test_an_invalid_name_is_refused_before_any_connection():
    channel = SftpDelivery(SftpEndpoint("127.0.0.1", 1, "atra", Path("/nonexistent"), Path("/nonexistent")))
    with pytest.raises(PermanentDeliveryError, match="not a deliverable file name"):
        await channel.deliver("../inbox/x.zip", b"x")
