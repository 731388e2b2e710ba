"""The answer files: a JSON acceptance and a RAP 1.05 FatalReturn, written whole into the outbox."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

from cdr_mediation.codecs.rap import FatalReturn, ReturnBatch, decode_rap
from cdr_mediation.stack.regulator.answers import (
    ACK_FORMAT,
    ack_document,
    list_responses,
    rejection_file,
    write_atomically,
)
from cdr_mediation.stack.regulator.ledger import Receipt
from cdr_mediation.stack.regulator.script import RejectionTerms

NOW = dt.datetime(2026, 3, 3, 9, 0, tzinfo=dt.timezone.utc)


def test_an_ack_names_the_file_its_digest_and_the_receipt():
    receipt = Receipt(3, "CDAFGAWAFGRA00042", "a" * 64, 10, "sftp", "atra", "2026-03-03T08:59:00.000000Z")
    ack = json.loads(ack_document(receipt, now=NOW))
    assert ack == {"format": ACK_FORMAT, "file": "CDAFGAWAFGRA00042", "sha256": "a" * 64, "size": 10,
                   "receipt_sequence": 3, "received_at": "2026-03-03T08:59:00.000000Z",
                   "acknowledged_at": "2026-03-03T09:00:00Z"}


def test_a_rejection_is_a_rap_fatal_return_naming_the_file_with_the_given_codes():
    terms = RejectionTerms(42, "AFGRA", "AFGAW", (34, 100), test_data=True)
    rap = decode_rap(rejection_file(terms, file_name="TDAFGAWAFGRA00042", sha256="a" * 64,
                                    rap_sequence_number=7, now=NOW))
    assert isinstance(rap, ReturnBatch)
    assert (rap.control.sender, rap.control.recipient) == ("AFGRA", "AFGAW")
    assert rap.control.rap_file_sequence_number == 7 and rap.control.test_data
    (returned,) = rap.returns
    assert isinstance(returned, FatalReturn) and returned.file_sequence_number == 42
    assert [e.error_code for e in returned.transfer_batch_error] == [34, 100]
    assert returned.operator_spec == ("file=TDAFGAWAFGRA00042", f"sha256={'a' * 64}")
    assert rap.audit.return_details_count == 1


def test_answers_are_written_whole_and_listed_by_name_with_their_digest(tmp_path):
    write_atomically(tmp_path / "b.zip.rap", b"rap")
    write_atomically(tmp_path / "a.zip.ack", b"ack")
    write_atomically(tmp_path / "a.zip.ack", b"ack, again")  # replaced, never appended
    (tmp_path / ".c.zip.ack.1234abcd.part").write_bytes(b"half")  # a write in progress
    (tmp_path / "notes.txt").write_bytes(b"not an answer")
    listed = list_responses(tmp_path, None)
    assert [(r["name"], r["file"], r["kind"]) for r in listed] == [("a.zip.ack", "a.zip", "ack"),
                                                                   ("b.zip.rap", "b.zip", "rap")]
    assert listed[0]["sha256"] == hashlib.sha256(b"ack, again").hexdigest() and listed[0]["size"] == 10
    assert [r["name"] for r in list_responses(tmp_path, "b.zip")] == ["b.zip.rap"]
