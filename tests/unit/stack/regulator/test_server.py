"""The simulator's one store: receipts and answers for both channels, on real files in a temporary
directory (no network: the HTTPS API calls `store_upload`, the drop-box watcher `take_from_inbox`)."""

from __future__ import annotations

import hashlib
import json

import pytest

from cdr_mediation.codecs.rap import decode_rap
from cdr_mediation.stack.regulator.answers import ACK_FORMAT
from cdr_mediation.stack.regulator.dropbox import new_arrivals
from cdr_mediation.stack.regulator.script import AnswerRule, Arrival
from cdr_mediation.stack.regulator.server import RegulatorServer


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture()
def regulator(tmp_path):
    for name in ("inbox", "outbox"):
        (tmp_path / name).mkdir()
    config = {"inbox": str(tmp_path / "inbox"), "outbox": str(tmp_path / "outbox"),
              "ledger": str(tmp_path / "receipts.jsonl"), "rules": str(tmp_path / "answers.json"),
              "sftp_user": "atra"}
    return RegulatorServer(config), config, tmp_path


def _upload(tmp_path, server, name, data, client="cdr-exporter"):
    staged = tmp_path / "inbox" / f".https-{_sha(data)[:8]}.part"
    staged.write_bytes(data)
    return server.store_upload(name, staged, _sha(data), len(data), client)


def _scan(server):
    for name in new_arrivals(server.inbox, server.is_known):
        server.take_from_inbox(name)


def test_each_file_gets_one_receipt_whatever_the_channel_and_the_number_of_deliveries(regulator):
    server, config, tmp_path = regulator
    (tmp_path / "inbox" / "a.zip").write_bytes(b"A")
    (tmp_path / "inbox" / ".a.zip.0123.part").write_bytes(b"partial")  # an SFTP upload in progress
    _scan(server)
    _scan(server)
    assert [(r.sequence, r.file, r.channel, r.client) for r in server.ledger.receipts()] == [
        (1, "a.zip", "sftp", "atra")]

    assert _upload(tmp_path, server, "a.zip", b"A")[0] is Arrival.REDELIVERY  # the same file, over HTTPS
    arrival, receipt = _upload(tmp_path, server, "b.zip", b"B")
    assert arrival is Arrival.NEW and receipt.sequence == 2 and receipt.channel == "https"
    assert _upload(tmp_path, server, "b.zip", b"B")[0] is Arrival.REDELIVERY
    assert (tmp_path / "inbox" / "b.zip").read_bytes() == b"B"
    _scan(server)  # the HTTPS file in the inbox is not taken for a second, SFTP delivery

    receipts = {r.file: r for r in server.ledger.receipts()}
    assert {f: (r.sequence, r.deliveries, r.sha256) for f, r in receipts.items()} == {
        "a.zip": (1, 2, _sha(b"A")), "b.zip": (2, 2, _sha(b"B"))}
    assert sorted(p.name for p in (tmp_path / "inbox").iterdir()) == [".a.zip.0123.part", "a.zip", "b.zip"]

    # A restart keeps every receipt and goes on numbering after them.
    restarted = RegulatorServer(config)
    assert restarted.ledger.receipts() == server.ledger.receipts()
    assert _upload(tmp_path, restarted, "c.zip", b"C")[1].sequence == 3


def test_an_https_upload_of_a_file_sftp_delivered_but_not_yet_scanned_is_a_redelivery(regulator):
    server, _, tmp_path = regulator
    (tmp_path / "inbox" / "a.zip").write_bytes(b"A")
    arrival, receipt = _upload(tmp_path, server, "a.zip", b"A")
    assert arrival is Arrival.REDELIVERY and (receipt.channel, receipt.deliveries) == ("sftp", 2)


def test_other_bytes_under_a_received_name_are_a_conflict_and_change_nothing(regulator):
    server, _, tmp_path = regulator
    _upload(tmp_path, server, "a.zip", b"A")
    arrival, receipt = _upload(tmp_path, server, "a.zip", b"not A")
    assert arrival is Arrival.CONFLICT and receipt.sha256 == _sha(b"A")
    assert (tmp_path / "inbox" / "a.zip").read_bytes() == b"A"
    assert [p.name for p in (tmp_path / "inbox").iterdir()] == ["a.zip"]  # the staged upload is gone
    assert server.ledger.get("a.zip").deliveries == 1


def test_answers_follow_the_rules_in_force_when_the_file_arrives(regulator):
    server, _, tmp_path = regulator
    server.add_rule(AnswerRule.from_json({"file": "CDAFGAW*", "answer": "reject", "errors": [34]}),
                    apply_to_received=False)
    server.add_rule(AnswerRule.from_json({"file": "silent-*", "answer": "none"}), apply_to_received=False)
    _upload(tmp_path, server, "ok.zip", b"1")
    _upload(tmp_path, server, "CDAFGAWAFGRA00005", b"2")
    _upload(tmp_path, server, "silent-1.zip", b"3")
    outbox = tmp_path / "outbox"
    assert sorted(p.name for p in outbox.iterdir()) == ["CDAFGAWAFGRA00005.rap", "ok.zip.ack"]

    ack = json.loads((outbox / "ok.zip.ack").read_text())
    assert ack["format"] == ACK_FORMAT and ack["file"] == "ok.zip" and ack["sha256"] == _sha(b"1")
    assert ack["receipt_sequence"] == server.ledger.get("ok.zip").sequence
    rap = decode_rap((outbox / "CDAFGAWAFGRA00005.rap").read_bytes())
    assert rap.returns[0].file_sequence_number == 5 and rap.control.rap_file_sequence_number == 1
    assert [(r["name"], r["kind"]) for r in server.responses(None)] == [("CDAFGAWAFGRA00005.rap", "rap"),
                                                                        ("ok.zip.ack", "ack")]
    silent = server.ledger.get("silent-1.zip")
    assert (silent.answer, silent.response) == ("none", None)

    # A late answer: the test decides after the exporter gave up waiting.
    answered = server.add_rule(AnswerRule.from_json({"file": "silent-*", "answer": "ack"}), apply_to_received=True)
    assert [r.file for r in answered] == ["silent-1.zip"] and (outbox / "silent-1.zip.ack").exists()
    assert server.ledger.get("ok.zip").response == "ok.zip.ack"  # answered files are left alone


def test_commanded_rules_survive_a_restart(regulator):
    server, config, _ = regulator
    server.add_rule(AnswerRule.from_json({"file": "x*", "answer": "none"}), apply_to_received=False)
    server.set_default(AnswerRule.from_json({"answer": "none"}))
    assert RegulatorServer(config).book == server.book
    server.clear_rules()
    assert RegulatorServer(config).book.rules == ()


def test_a_rejection_that_cannot_be_written_is_recorded_on_the_receipt(regulator):
    server, _, tmp_path = regulator
    server.add_rule(AnswerRule.from_json({"file": "*", "answer": "reject", "errors": [1]}), apply_to_received=False)
    _, receipt = _upload(tmp_path, server, "op-a.zip", b"x")
    assert receipt.response is None and "not a TD.57 file name" in receipt.answer_error
    assert list((tmp_path / "outbox").iterdir()) == []
