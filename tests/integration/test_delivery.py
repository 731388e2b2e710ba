"""Delivery to the regulator over SFTP and HTTPS (mTLS), against the real servers of the local stack.

The regulator simulator (`stack/regulator/`) receives both channels into one drop box, keeps a
ledger of receipts (one per file, with its SHA-256) and answers as the test commands. The
channels are configured from what `cdrmed stack env` exports (`stack_env`).
"""

from __future__ import annotations

import asyncio
import json
import random
import string
import uuid
from pathlib import Path

import aiohttp
import asn1tools
import asyncssh
import pytest

from cdr_mediation.codecs.rap import FatalReturn, decode_rap
from cdr_mediation.infra.delivery import (
    AccessRefused,
    AnswerKind,
    DeliveryConflict,
    EndpointUnavailable,
    Outcome,
    TapFileName,
)
from cdr_mediation.infra.delivery.files import sha256_hex
from cdr_mediation.infra.delivery.https import HttpsDelivery, HttpsEndpoint
from cdr_mediation.infra.delivery.sftp import SftpDelivery, SftpEndpoint
from cdr_mediation.stack.regulator import ensure_dev_pki

from .support.processes import eventually


@pytest.fixture(scope="module")
def regulator(stack) -> dict:
    """What `stack up` recorded for the simulator: control URL and drop-box paths."""
    return stack.state.read_manifest()["regulator"]


@pytest.fixture()
def sftp(stack_env, regulator) -> SftpDelivery:
    return SftpDelivery(SftpEndpoint(
        host=stack_env["CDR_SFTP_HOST"], port=int(stack_env["CDR_SFTP_PORT"]), user=stack_env["CDR_SFTP_USER"],
        client_key=Path(stack_env["CDR_SFTP_KEY_PATH"]), known_hosts=Path(stack_env["CDR_SFTP_KNOWN_HOSTS"]),
        remote_dir=stack_env["CDR_SFTP_REMOTE_DIR"], responses_dir=regulator["sftp_responses_dir"],
        connect_timeout_s=5, operation_timeout_s=30,
    ))


def _https(stack_env: dict[str, str], **overrides) -> HttpsDelivery:
    values = dict(base_url=stack_env["CDR_HTTPS_URL"], ca_file=Path(stack_env["CDR_HTTPS_CA_CERT"]),
                  client_cert=Path(stack_env["CDR_HTTPS_CLIENT_CERT"]),
                  client_key=Path(stack_env["CDR_HTTPS_CLIENT_KEY"]), connect_timeout_s=5, operation_timeout_s=30)
    return HttpsDelivery(HttpsEndpoint(**{**values, **overrides}))


@pytest.fixture()
def https(stack_env) -> HttpsDelivery:
    return _https(stack_env)


def _name(stem: str = "export") -> str:
    return f"{stem}-{uuid.uuid4().hex[:10]}.zip"


def _tap_name() -> str:
    """A fresh TD.57 name (the sender code varies so that the test sessions never reuse one)."""
    sender = "AFG" + "".join(random.choices(string.ascii_uppercase, k=2))
    return str(TapFileName(sender, "AFGRA", random.randint(1, 99999)))


async def _control(regulator: dict, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"{regulator['control_url']}{path}", json=body) as response:
            return response.status, await response.json()


async def _answer(regulator: dict, **command) -> None:
    status, body = await _control(regulator, "POST", "/control/answers", command)
    assert status == 201, body


async def _receipts(regulator: dict, file_name: str) -> list[dict]:
    return (await _control(regulator, "GET", f"/control/receipts?file={file_name}"))[1]["receipts"]


def _inbox(regulator: dict) -> Path:
    return Path(regulator["inbox"])


# -- SFTP ----------------------------------------------------------------------------------------

async def test_sftp_delivery_lands_whole_under_its_final_name_and_is_received_once(sftp, regulator):
    name, data = _name(), b"PK\x03\x04" + bytes(range(256)) * 4096  # ~1 MiB: more than one write
    receipt = await sftp.deliver(name, data)
    assert (receipt.outcome, receipt.sha256, receipt.size) == (Outcome.STORED, sha256_hex(data), len(data))
    assert (_inbox(regulator) / name).read_bytes() == data
    assert [p.name for p in _inbox(regulator).iterdir() if name in p.name] == [name]  # no temporary file left

    received = await eventually(lambda: _receipts(regulator, name), timeout=10, what="simulator receipt")
    assert [(r["sha256"], r["size"], r["channel"]) for r in received] == [(sha256_hex(data), len(data), "sftp")]


async def test_redelivering_the_same_bytes_is_reported_and_never_makes_a_second_receipt(sftp, https, regulator):
    name, data = _name(), b"the signed export"
    assert (await sftp.deliver(name, data)).outcome is Outcome.STORED
    first = await eventually(lambda: _receipts(regulator, name), timeout=10, what="simulator receipt")

    again = await sftp.deliver(name, data)
    assert again.outcome is Outcome.ALREADY_DELIVERED and again.sha256 == sha256_hex(data)
    # The other channel knows it too: one regulator, one store.
    assert (await https.deliver(name, data)).outcome is Outcome.ALREADY_DELIVERED

    (receipt,) = await _receipts(regulator, name)
    assert receipt["sequence"] == first[0]["sequence"] and receipt["sha256"] == sha256_hex(data)
    assert [p.name for p in _inbox(regulator).iterdir() if name in p.name] == [name]
    assert len(await sftp.fetch_responses(name)) == 1  # answered once


async def test_other_bytes_under_a_delivered_name_are_a_conflict_on_both_channels(sftp, https, regulator):
    name = _name()
    await sftp.deliver(name, b"original")
    for channel in (sftp, https):
        with pytest.raises(DeliveryConflict) as conflict:
            await channel.deliver(name, b"rebuilt differently")
        assert not conflict.value.retryable
        assert conflict.value.existing_sha256 == sha256_hex(b"original")
        assert conflict.value.sha256 == sha256_hex(b"rebuilt differently")
    assert (_inbox(regulator) / name).read_bytes() == b"original"
    assert [r["sha256"] for r in await _receipts(regulator, name)] == [sha256_hex(b"original")]


async def test_sftp_server_down_is_a_retryable_error_and_the_retry_delivers(stack, sftp, regulator):
    name = _name()
    # In a thread: the component's health check runs its own event loop.
    await asyncio.to_thread(stack.components["sftp"].stop)
    try:
        with pytest.raises(EndpointUnavailable) as down:
            await sftp.deliver(name, b"while the server is down")
        assert down.value.retryable and down.value.channel == "sftp"
    finally:
        await asyncio.to_thread(stack.components["sftp"].start)  # same port and host key: no reconfiguration
    assert (await sftp.deliver(name, b"while the server is down")).outcome is Outcome.STORED
    assert (_inbox(regulator) / name).read_bytes() == b"while the server is down"


async def test_sftp_refuses_a_host_key_we_do_not_know(stack_env, tmp_path):
    stranger = tmp_path / "known_hosts"
    key = asyncssh.generate_private_key("ssh-ed25519")
    stranger.write_text(f"[127.0.0.1]:{stack_env['CDR_SFTP_PORT']} {key.export_public_key().decode()}")
    channel = SftpDelivery(SftpEndpoint(
        stack_env["CDR_SFTP_HOST"], int(stack_env["CDR_SFTP_PORT"]), stack_env["CDR_SFTP_USER"],
        Path(stack_env["CDR_SFTP_KEY_PATH"]), stranger, connect_timeout_s=5, operation_timeout_s=30))
    with pytest.raises(AccessRefused) as refused:
        await channel.deliver(_name(), b"x")
    assert not refused.value.retryable and "HostKeyNotVerifiable" in str(refused.value)


# -- HTTPS with client certificates --------------------------------------------------------------

async def test_https_upload_with_the_exporter_certificate_is_stored_and_idempotent(https, regulator):
    name, data = _name(), bytes(range(256)) * 8192  # 2 MiB
    receipt = await https.deliver(name, data)
    assert receipt.outcome is Outcome.STORED and receipt.location.endswith(f"/v1/files/{name}")
    assert (_inbox(regulator) / name).read_bytes() == data
    assert (await https.deliver(name, data)).outcome is Outcome.ALREADY_DELIVERED
    (received,) = await _receipts(regulator, name)
    assert (received["channel"], received["client"], received["sha256"], received["deliveries"]) == (
        "https", "cdr-exporter", sha256_hex(data), 2)


async def test_https_large_file_streams_from_disk(https, regulator, tmp_path):
    path, name = tmp_path / "export.zip", _name()
    path.write_bytes(bytes(range(256)) * 40_000)  # ~10 MB
    receipt = await https.deliver_file(name, path)
    assert receipt.outcome is Outcome.STORED and receipt.size == path.stat().st_size
    assert sha256_hex((_inbox(regulator) / name).read_bytes()) == receipt.sha256


@pytest.mark.parametrize("identity", ["no client certificate", "client certificate of an unknown CA",
                                      "server certificate of a CA we do not trust"])
async def test_https_refusals_on_either_side_are_permanent(stack_env, regulator, tmp_path, identity):
    foreign = ensure_dev_pki(tmp_path / "foreign-pki")  # a CA the regulator never heard of
    overrides = {
        "no client certificate": dict(client_cert=None, client_key=None),
        "client certificate of an unknown CA": dict(client_cert=foreign.client_cert, client_key=foreign.client_key),
        "server certificate of a CA we do not trust": dict(ca_file=foreign.ca_cert),
    }[identity]
    name = _name()
    with pytest.raises(AccessRefused) as refused:
        await _https(stack_env, **overrides).deliver(name, b"x")
    assert not refused.value.retryable and str(refused.value).startswith("https: TLS: ")
    assert await _receipts(regulator, name) == [] and not (_inbox(regulator) / name).exists()


async def test_https_endpoint_down_is_retryable(stack, https):
    name = _name()
    await asyncio.to_thread(stack.components["regulator"].stop)
    try:
        with pytest.raises(EndpointUnavailable) as down:
            await https.deliver(name, b"x")
        assert down.value.retryable
    finally:
        await asyncio.to_thread(stack.components["regulator"].start)
    assert (await https.deliver(name, b"x")).outcome is Outcome.STORED


# -- the simulator's answers -----------------------------------------------------------------------

async def test_the_regulator_acknowledges_by_default_over_both_channels(sftp, https, regulator):
    name, data = _name(), b"accepted file"
    await sftp.deliver(name, data)
    (ack,) = await eventually(lambda: sftp.fetch_responses(name), timeout=10, what="ACK over SFTP")
    assert (ack.name, ack.file_name, ack.kind) == (f"{name}.ack", name, AnswerKind.ACK)
    body = json.loads(ack.data)
    (receipt,) = await _receipts(regulator, name)
    assert (body["file"], body["sha256"], body["receipt_sequence"]) == (name, sha256_hex(data), receipt["sequence"])
    assert await https.fetch_responses(name) == [ack]  # the same answer over HTTPS


@pytest.fixture(scope="module")
def reference_rap(shared_dir):
    asn1_dir = shared_dir / "spec" / "asn1"
    spec = asn1tools.compile_files([str(asn1_dir / "TAP-0312.asn"), str(asn1_dir / "RAP-0105.asn")], "ber")
    return spec.modules["RAP-0105"]["RapDataInterChange"]


async def test_the_regulator_rejects_with_a_rap_file_when_told(https, sftp, regulator, reference_rap):
    name = _tap_name()
    tap = TapFileName.parse(name)
    await _answer(regulator, file=name, answer="reject", errors=[34, 100])
    await https.deliver(name, b"a TAP file the regulator will return")
    (rap,) = await eventually(lambda: https.fetch_responses(name), timeout=10, what="RAP over HTTPS")
    assert (rap.name, rap.kind) == (f"{name}.rap", AnswerKind.RAP)
    assert [r.data for r in await sftp.fetch_responses(name)] == [rap.data]

    kind, batch = reference_rap.decode(rap.data)  # the GSMA module, not the project's codec
    assert kind == "returnBatch"
    control = batch["rapBatchControlInfoRap"]
    assert (control["sender"], control["recipient"]) == (tap.recipient.encode(), tap.sender.encode())
    ((detail_kind, fatal),) = batch["returnDetails"]
    assert detail_kind == "fatalReturn"
    assert fatal["fileSequenceNumber"] == f"{tap.file_sequence_number:05d}".encode()
    assert [e["errorCode"] for e in fatal["transferBatchError"]["errorDetail"]] == [34, 100]
    assert f"file={name}".encode() in fatal["operatorSpecList"]
    decoded = decode_rap(rap.data)  # and what the lifecycle will store as the reasons
    assert isinstance(decoded.returns[0], FatalReturn)
    assert (await _receipts(regulator, name))[0]["answer"] == "reject"


async def test_a_returned_file_leaves_the_inbox_and_its_corrected_file_is_a_new_receipt(https, sftp, regulator):
    name = _tap_name()
    await _answer(regulator, file=name, answer="reject", errors=[34])
    await sftp.deliver(f"{name}.p7s", b"its signature")
    await sftp.deliver(name, b"a TAP file the regulator will return")
    rejected = await eventually(lambda: _returned(regulator, name), timeout=10, what="the file returned")
    assert not (Path(regulator["inbox"]) / name).exists()
    assert not (Path(regulator["inbox"]) / f"{name}.p7s").exists()  # the signature goes back with it
    assert (await _receipts(regulator, f"{name}.p7s"))[0]["returned"] is True

    # The corrected file, other bytes under the same name: not a conflict, a receipt of its own.
    await _answer(regulator, file=name, answer="ack")
    corrected = await https.deliver(name, b"the corrected TAP file")
    assert corrected.outcome is Outcome.STORED
    (receipt,) = await _receipts(regulator, name)
    assert receipt["sequence"] > rejected["sequence"] and receipt["sha256"] == corrected.sha256
    assert (receipt["answer"], receipt["returned"]) == ("ack", False)
    assert (Path(regulator["inbox"]) / name).read_bytes() == b"the corrected TAP file"


async def _returned(regulator: dict, name: str) -> dict | None:
    receipts = await _receipts(regulator, name)
    return receipts[0] if receipts and receipts[0]["returned"] else None


async def test_the_regulator_stays_silent_when_told_and_can_answer_late(sftp, regulator):
    name = _name("silent")
    await _answer(regulator, file=name, answer="none")
    await sftp.deliver(name, b"nobody will answer this")
    (receipt,) = await eventually(lambda: _receipts(regulator, name), timeout=10, what="simulator receipt")
    # The answer is decided when the receipt is recorded: "none" here means none will come.
    assert (receipt["answer"], receipt["response"]) == ("none", None)
    assert await sftp.fetch_responses(name) == []

    status, body = await _control(regulator, "POST", "/control/answers",
                                  {"file": name, "answer": "ack", "apply_to_received": True})
    assert status == 201 and [r["file"] for r in body["answered"]] == [name]
    assert [r.kind for r in await sftp.fetch_responses(name)] == [AnswerKind.ACK]


async def test_a_wrong_command_is_refused_with_its_reason(regulator):
    status, body = await _control(regulator, "POST", "/control/answers", {"file": "x", "answer": "reject"})
    assert status == 400 and body == {"error": "a rejection carries at least one error code in 'errors'"}


def test_the_simulator_is_part_of_the_stack_status(stack, stack_env):
    health = stack.status()["regulator"]
    assert health.healthy, health.detail
    assert health.endpoint == stack_env["CDR_HTTPS_URL"] and health.endpoint.startswith("https://127.0.0.1:")
    assert stack_env["CDR_DELIVERY_METHOD"] == "sftp"
