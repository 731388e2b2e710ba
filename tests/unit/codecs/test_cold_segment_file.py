"""The segment file: deterministic gzip of JSON lines, streamed, with the digests the manifest states."""

from __future__ import annotations

import gzip
import hashlib

import pytest

from cdr_mediation.codecs.cold_segment import SegmentFileWriter, file_sha256, iter_segment_lines

LINES = [f'{{"chain_seq":{n},"x":"{"y" * (n % 50)}"}}\n'.encode() for n in range(1, 2001)]


def write(path, lines) -> object:
    with SegmentFileWriter(path) as writer:
        for line in lines:
            writer.write(line)
    return writer.close()


def test_the_same_lines_give_the_same_bytes_whatever_the_name_and_time(tmp_path, monkeypatch):
    monkeypatch.setattr(gzip.time, "time", lambda: 1_700_000_000.0)  # what gzip would stamp by default
    first = write(tmp_path / "a.jsonl.gz", LINES)
    monkeypatch.setattr(gzip.time, "time", lambda: 1_900_000_000.0)
    second = write(tmp_path / "another-name.jsonl.gz", LINES)
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "another-name.jsonl.gz").read_bytes()
    assert first == second


def test_the_header_carries_no_time_and_no_name(tmp_path):
    write(tmp_path / "segment.jsonl.gz", LINES)
    header = (tmp_path / "segment.jsonl.gz").read_bytes()[:10]
    assert header[:3] == b"\x1f\x8b\x08"  # gzip, deflate
    assert header[3] == 0  # FLG: no FNAME, no comment, no extra field
    assert header[4:8] == b"\0\0\0\0"  # MTIME 0
    assert header[9] == 255  # OS unknown


def test_the_digests_are_of_the_file_and_of_its_content(tmp_path):
    digest = write(tmp_path / "s.jsonl.gz", LINES)
    assert (digest.sha256, digest.size) == file_sha256(tmp_path / "s.jsonl.gz")
    content = b"".join(LINES)
    assert (digest.content_sha256, digest.content_size) == (hashlib.sha256(content).hexdigest(), len(content))
    assert gzip.decompress((tmp_path / "s.jsonl.gz").read_bytes()) == content
    assert list(iter_segment_lines(tmp_path / "s.jsonl.gz")) == LINES


def test_a_failed_write_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError):
        with SegmentFileWriter(tmp_path / "s.jsonl.gz") as writer:
            writer.write(LINES[0])
            raise RuntimeError("the database went away")
    assert list(tmp_path.iterdir()) == []
