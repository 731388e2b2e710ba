"""Which HTTPS/TLS failures the export lifecycle retries and which need a person."""

from __future__ import annotations

import ssl

import aiohttp
import pytest

from cdr_mediation.infra.delivery import AccessRefused, EndpointUnavailable, PermanentDeliveryError, RetryableDeliveryError
from cdr_mediation.infra.delivery.https import HttpsDelivery, HttpsEndpoint, classify_http_error, status_error


def _alert(reason: str) -> ssl.SSLError:
    error = ssl.SSLError(1, f"[SSL: {reason}] alert")
    error.reason = reason
    return error


def _lost_connection_with(cause: BaseException) -> aiohttp.ClientOSError:
    # What aiohttp raises when the server's TLS alert arrives after the handshake (TLS 1.3).
    error = aiohttp.ClientOSError(1, str(cause))
    error.__cause__ = cause
    return error


@pytest.mark.parametrize("exc", [
    _lost_connection_with(_alert("TLSV13_ALERT_CERTIFICATE_REQUIRED")),
    _lost_connection_with(_alert("TLSV1_ALERT_UNKNOWN_CA")),
    ssl.SSLCertVerificationError(1, "certificate verify failed"),
], ids=["no-client-certificate", "client-certificate-of-unknown-ca", "server-certificate-not-trusted"])
def test_tls_refusals_are_permanent(exc):
    error = classify_http_error(exc, file_name="f.zip")
    assert isinstance(error, AccessRefused) and not error.retryable
    assert str(error).startswith("https: TLS: ")


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(111, "refused"),
    aiohttp.ServerDisconnectedError(),
    _lost_connection_with(ssl.SSLEOFError(8, "EOF occurred in violation of protocol")),
    aiohttp.ClientPayloadError("cut short"),
    TimeoutError(),
], ids=["refused", "disconnected", "eof-during-tls", "payload", "timeout"])
def test_outages_are_retryable(exc):
    assert isinstance(classify_http_error(exc), EndpointUnavailable)


def test_bugs_are_not_delivery_errors():
    assert classify_http_error(KeyError("bug")) is None


@pytest.mark.parametrize(("status", "body", "kind"), [
    (503, {}, RetryableDeliveryError),
    (500, {}, RetryableDeliveryError),
    (429, {}, RetryableDeliveryError),
    (400, {"error": "digest_mismatch"}, RetryableDeliveryError),
    (401, {}, AccessRefused),
    (403, {"error": "mutual TLS required"}, AccessRefused),
    (400, {"error": "invalid_name"}, PermanentDeliveryError),
    (404, {}, PermanentDeliveryError),
])
def test_statuses(status, body, kind):
    error = status_error(status, body, file_name="f.zip")
    assert type(error) is kind
    assert str(error).startswith(f"https: HTTP {status}")


def test_a_missing_ca_file_is_configuration_not_an_outage(tmp_path):
    channel = HttpsDelivery(HttpsEndpoint("https://127.0.0.1:1", tmp_path / "no-ca.pem", None, None))
    with pytest.raises(PermanentDeliveryError, match="cannot load the CA"):
        channel._tls()


def test_the_key_passphrase_stays_out_of_reprs(tmp_path):
    endpoint = HttpsEndpoint("https://127.0.0.1:1", tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "c.key",
                             client_key_passphrase="key-passphrase-123")
    assert "key-passphrase-123" not in repr(endpoint)
