"""SIGNED → DELIVERED without a network: what travels, what an attempt's result means, what is
recorded, and which adapter the settings build."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdr_mediation.agents.export_delivery import (
    Next,
    OutgoingPart,
    Verdict,
    attempt_delivery,
    delivered_detail,
    delivery_channel,
    delivery_parts,
    judge,
)
from cdr_mediation.infra.delivery import (
    AccessRefused,
    DeliveryConflict,
    DeliveryError,
    DeliveryReceipt,
    EndpointUnavailable,
    InvalidFileName,
    Outcome,
    PermanentDeliveryError,
    RetryableDeliveryError,
)
from cdr_mediation.infra.delivery.https import HttpsDelivery
from cdr_mediation.infra.delivery.sftp import SftpDelivery
from cdr_mediation.settings import Settings

ZIP_SHA = "a" * 64
CMS_SHA = "c" * 64
NAME = "TDAFGAAATRAA00001.zip"


def _receipt(name: str = NAME, sha256: str = ZIP_SHA, outcome: Outcome = Outcome.STORED,
             channel: str = "sftp") -> DeliveryReceipt:
    return DeliveryReceipt(channel, name, sha256, 1234, outcome, f"sftp://atra@127.0.0.1:2222/inbox/{name}")


# -- what travels ----------------------------------------------------------------------------------

def test_the_signature_travels_first_and_both_keep_their_local_names(tmp_path):
    zip_path = tmp_path / NAME
    signature, export = delivery_parts(zip_path, zip_sha256=ZIP_SHA, cms_sha256=CMS_SHA)
    assert (signature.remote_name, signature.path, signature.sha256) == (f"{NAME}.p7s", tmp_path / f"{NAME}.p7s",
                                                                         CMS_SHA)
    assert (export.remote_name, export.path, export.sha256) == (NAME, zip_path, ZIP_SHA)


# -- what an attempt means -------------------------------------------------------------------------

@pytest.mark.parametrize("outcome", list(Outcome))
def test_stored_and_already_delivered_are_both_delivered(outcome):
    # ALREADY_DELIVERED is what a retry after a crash between upload and record sees.
    assert judge(_receipt(outcome=outcome), ZIP_SHA) == Verdict(Next.DELIVERED)


def test_a_receipt_for_other_bytes_than_recorded_is_given_up():
    assert judge(_receipt(sha256="b" * 64), ZIP_SHA) == Verdict(Next.GIVE_UP, "digest_mismatch")


@pytest.mark.parametrize("error, verdict", [
    (EndpointUnavailable("refused", channel="sftp"), Verdict(Next.RETRY, "unavailable")),
    (RetryableDeliveryError("HTTP 503", channel="https"), Verdict(Next.RETRY, "retryable")),
    (AccessRefused("PermissionDenied", channel="sftp"), Verdict(Next.GIVE_UP, "access_refused")),
    (DeliveryConflict(channel="https", file_name=NAME, sha256=ZIP_SHA, existing_sha256="b" * 64),
     Verdict(Next.GIVE_UP, "conflict")),
    (InvalidFileName("bad", channel="sftp"), Verdict(Next.GIVE_UP, "invalid_name")),
    (PermanentDeliveryError("HTTP 404", channel="https"), Verdict(Next.GIVE_UP, "permanent")),
    (DeliveryError("unclassified", channel="https"), Verdict(Next.GIVE_UP, "permanent")),
])
def test_errors_retry_only_when_a_later_attempt_can_succeed(error, verdict):
    assert judge(error, ZIP_SHA) == verdict


# -- one pass over the parts ------------------------------------------------------------------------

class ScriptedChannel:
    """Answers each file name with a receipt or raises an error, as scripted; records the calls."""

    channel = "sftp"

    def __init__(self, script: dict[str, DeliveryReceipt | Exception]) -> None:
        self.script = script
        self.calls: list[str] = []

    async def deliver_file(self, file_name: str, path: Path) -> DeliveryReceipt:
        self.calls.append(file_name)
        answer = self.script[file_name]
        if isinstance(answer, Exception):
            raise answer
        return answer


PARTS = (OutgoingPart(f"{NAME}.p7s", Path(f"/x/{NAME}.p7s"), CMS_SHA), OutgoingPart(NAME, Path(f"/x/{NAME}"), ZIP_SHA))


async def test_a_pass_delivers_every_part_in_order():
    signature = _receipt(f"{NAME}.p7s", CMS_SHA, Outcome.ALREADY_DELIVERED)
    export = _receipt()
    channel = ScriptedChannel({f"{NAME}.p7s": signature, NAME: export})
    attempt = await attempt_delivery(channel, PARTS)
    assert attempt.delivered and attempt.receipts == (signature, export) and attempt.failed is None
    assert channel.calls == [f"{NAME}.p7s", NAME]


async def test_the_zip_does_not_go_out_when_its_signature_could_not():
    down = EndpointUnavailable("ConnectionRefusedError", channel="sftp", file_name=f"{NAME}.p7s")
    channel = ScriptedChannel({f"{NAME}.p7s": down, NAME: _receipt()})
    attempt = await attempt_delivery(channel, PARTS)
    assert (attempt.verdict, attempt.receipts, attempt.failed) == (Verdict(Next.RETRY, "unavailable"), (), PARTS[0])
    assert attempt.reason == str(down) and channel.calls == [f"{NAME}.p7s"]


async def test_a_conflict_on_the_zip_gives_up_after_the_signature_went_out():
    signature = _receipt(f"{NAME}.p7s", CMS_SHA)
    conflict = DeliveryConflict(channel="sftp", file_name=NAME, sha256=ZIP_SHA, existing_sha256="b" * 64)
    attempt = await attempt_delivery(ScriptedChannel({f"{NAME}.p7s": signature, NAME: conflict}), PARTS)
    assert (attempt.verdict, attempt.receipts, attempt.failed) == (Verdict(Next.GIVE_UP, "conflict"), (signature,),
                                                                   PARTS[1])


async def test_a_receipt_for_other_bytes_names_both_digests():
    channel = ScriptedChannel({f"{NAME}.p7s": _receipt(f"{NAME}.p7s", CMS_SHA), NAME: _receipt(sha256="b" * 64)})
    attempt = await attempt_delivery(channel, PARTS)
    assert attempt.verdict == Verdict(Next.GIVE_UP, "digest_mismatch")
    assert "b" * 64 in attempt.reason and ZIP_SHA in attempt.reason


async def test_anything_but_a_delivery_error_is_a_bug_and_propagates():
    with pytest.raises(FileNotFoundError):
        await attempt_delivery(ScriptedChannel({f"{NAME}.p7s": FileNotFoundError("gone")}), PARTS)


# -- what is recorded ------------------------------------------------------------------------------

def test_the_delivered_detail_names_channel_remote_names_digests_and_outcomes():
    detail = delivered_detail(_receipt(f"{NAME}.p7s", CMS_SHA, Outcome.ALREADY_DELIVERED),
                              _receipt(NAME, ZIP_SHA, Outcome.STORED))
    assert detail == {
        "channel": "sftp", "remote_name": NAME, "sha256": ZIP_SHA, "size": 1234, "outcome": "stored",
        "location": f"sftp://atra@127.0.0.1:2222/inbox/{NAME}",
        "signature": {"remote_name": f"{NAME}.p7s", "sha256": CMS_SHA, "size": 1234,
                      "outcome": "already_delivered",
                      "location": f"sftp://atra@127.0.0.1:2222/inbox/{NAME}.p7s"},
    }


def test_a_pair_delivered_over_two_channels_is_not_recorded():
    with pytest.raises(ValueError, match="channel|over"):
        delivered_detail(_receipt(f"{NAME}.p7s", CMS_SHA, channel="https"), _receipt())


# -- the channel from the settings -----------------------------------------------------------------

def test_sftp_is_built_from_the_sftp_settings(tmp_path):
    channel = delivery_channel(Settings.load({
        "CDR_SFTP_HOST": "sftp.atra.example", "CDR_SFTP_PORT": "2222", "CDR_SFTP_USER": "op",
        "CDR_SFTP_KEY_PATH": str(tmp_path / "id"), "CDR_SFTP_KNOWN_HOSTS": str(tmp_path / "kh"),
        "CDR_SFTP_REMOTE_DIR": "in"}))
    assert isinstance(channel, SftpDelivery) and channel.channel == "sftp"
    endpoint = channel.endpoint
    assert (endpoint.host, endpoint.port, endpoint.user, endpoint.client_key, endpoint.known_hosts,
            endpoint.remote_dir) == ("sftp.atra.example", 2222, "op", tmp_path / "id", tmp_path / "kh", "in")


def test_https_is_built_from_the_https_settings_with_the_key_passphrase():
    channel = delivery_channel(Settings.load({
        "CDR_DELIVERY_METHOD": "https", "CDR_HTTPS_URL": "https://atra.example:8443",
        "CDR_HTTPS_CA_CERT": "ca.pem", "CDR_HTTPS_CLIENT_CERT": "client.pem", "CDR_HTTPS_CLIENT_KEY": "client.key",
        "CDR_HTTPS_CLIENT_KEY_PASSPHRASE": "key-pass"}))
    assert isinstance(channel, HttpsDelivery) and channel.channel == "https"
    endpoint = channel.endpoint
    assert (endpoint.base_url, endpoint.ca_file, endpoint.client_cert, endpoint.client_key,
            endpoint.client_key_passphrase) == ("https://atra.example:8443", Path("ca.pem"), Path("client.pem"),
                                                Path("client.key"), "key-pass")


def test_a_channel_without_its_settings_is_refused_by_name():
    with pytest.raises(ValueError, match="CDR_SFTP_KEY_PATH, CDR_SFTP_KNOWN_HOSTS"):
        delivery_channel(Settings.load({}))
    with pytest.raises(ValueError, match="CDR_HTTPS_URL"):
        delivery_channel(Settings.load({"CDR_DELIVERY_METHOD": "https"}))
