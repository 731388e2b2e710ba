"""The rules both delivery channels and the regulator simulator share: names, digests, answers."""

from __future__ import annotations

import hashlib

import pytest

from cdr_mediation.infra.delivery import AnswerKind, InvalidFileName, PermanentDeliveryError, TapFileName
from cdr_mediation.infra.delivery.files import (
    CHUNK_SIZE,
    OutgoingFile,
    check_file_name,
    is_final_name,
    parse_response_name,
    response_name,
    temporary_name,
)


@pytest.mark.parametrize("name", ["CDAFGAWAFGRA00042", "op-a_2026-03-01.00001.zip", "a", "x" * 200])
def test_plain_names_are_deliverable(name):
    assert check_file_name(name, channel="sftp") == name
    assert is_final_name(name)


@pytest.mark.parametrize("name", ["", ".hidden", "../etc/passwd", "inbox/a.zip", "a..zip", "a b.zip", "ä.zip",
                                  "-rf", "x" * 201, "a.zip\n"])
def test_names_that_could_escape_the_drop_box_or_hide_are_refused(name):
    with pytest.raises(InvalidFileName) as refused:
        check_file_name(name, channel="https")
    assert isinstance(refused.value, PermanentDeliveryError) and not refused.value.retryable
    assert str(refused.value).startswith("https: ") and "not a deliverable file name" in str(refused.value)


def test_an_upload_in_progress_is_hidden_and_named_after_its_bytes():
    digest = hashlib.sha256(b"zip bytes").hexdigest()
    staged = temporary_name("CDAFGAWAFGRA00042", digest)
    assert staged == f".CDAFGAWAFGRA00042.{digest[:16]}.part"
    assert not is_final_name(staged)  # the receiver never takes it for a delivery
    assert temporary_name("CDAFGAWAFGRA00042", digest) == staged  # a retry reuses its leftover
    assert temporary_name("CDAFGAWAFGRA00042", hashlib.sha256(b"other").hexdigest()) != staged


def test_answers_are_named_after_the_file_they_answer():
    assert response_name("CDAFGAWAFGRA00042", AnswerKind.ACK) == "CDAFGAWAFGRA00042.ack"
    assert response_name("f.zip", AnswerKind.RAP) == "f.zip.rap"
    assert parse_response_name("f.zip.rap") == ("f.zip", AnswerKind.RAP)
    assert parse_response_name("CDAFGAWAFGRA00042.ack") == ("CDAFGAWAFGRA00042", AnswerKind.ACK)
    for other in ("f.zip", "f.zip.txt", ".f.zip.ack.1234.part", "ack", "README"):
        assert parse_response_name(other) is None


def test_td57_names_round_trip_and_others_are_not_td57():
    name = TapFileName("AFGAW", "AFGRA", 42)
    assert str(name) == "CDAFGAWAFGRA00042"
    assert TapFileName.parse("CDAFGAWAFGRA00042") == name
    assert TapFileName.parse("TDAFGAWAFGRA00042.zip") == TapFileName("AFGAW", "AFGRA", 42, test_data=True)
    for other in ("CDAFGAWAFGRA00000", "CDafgawAFGRA00042", "XXAFGAWAFGRA00042", "CDAFGAWAFGRA0042", "op-a.zip"):
        assert TapFileName.parse(other) is None


def test_outgoing_bytes_and_files_have_the_same_digest_and_chunks(tmp_path):
    data = bytes(range(256)) * (CHUNK_SIZE // 256 * 2 + 3)  # two full chunks and a bit
    path = tmp_path / "export.zip"
    path.write_bytes(data)
    in_memory = OutgoingFile.from_bytes("export.zip", data, channel="sftp")
    on_disk = OutgoingFile.from_path("export.zip", path, channel="sftp")
    assert in_memory.sha256 == on_disk.sha256 == hashlib.sha256(data).hexdigest()
    assert in_memory.size == on_disk.size == len(data)
    assert [len(c) for c in in_memory.chunks()] == [CHUNK_SIZE, CHUNK_SIZE, len(data) - 2 * CHUNK_SIZE]
    assert b"".join(on_disk.chunks()) == b"".join(in_memory.chunks()) == data
    with pytest.raises(InvalidFileName):
        OutgoingFile.from_bytes("../x", data, channel="sftp")
