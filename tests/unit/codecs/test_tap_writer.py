"""The streaming TAP writer: all-or-nothing output, bounded memory, kernel copy fallback."""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdr_mediation.codecs.errors import CodecValidationError
from cdr_mediation.codecs.tap import TapFileWriter, decode_tap_file, encode_tap_file, write_tap_file
from cdr_mediation.codecs.tap import writer as writer_module

from .codec_factories import make_cdr, make_header


def _records(count: int, start: int = 1) -> Iterator:
    for seq in range(start, start + count):
        yield make_cdr(seq, cdr_id=f"3f1c9a62-8b1e-4c53-9a7e-{seq:012d}", msisdn=f"+9370{seq % 10_000_000:07d}")


def test_summary_reports_what_was_written(tmp_path: Path):
    records = list(_records(3, start=10))
    summary = write_tap_file(tmp_path / "f.tap", make_header(), records)  # fsync on: the default
    assert summary.kind == "transferBatch"
    assert (summary.record_count, summary.first_chain_seq, summary.last_chain_seq) == (3, 10, 12)
    assert (summary.total_charge, summary.total_tax) == (3 * 1500, 3 * 150)
    assert summary.size == (tmp_path / "f.tap").stat().st_size
    assert (tmp_path / "f.tap").read_bytes() == encode_tap_file(make_header(), records)


def test_no_records_gives_a_notification(tmp_path: Path):
    summary = write_tap_file(tmp_path / "f.tap", make_header(), [])
    assert summary.kind == "notification" and summary.record_count == 0
    assert decode_tap_file((tmp_path / "f.tap").read_bytes()).kind == "notification"


def test_an_invalid_record_midway_leaves_no_file_and_no_temporary(tmp_path: Path):
    records = list(_records(5))
    records[2] = make_cdr(3, msisdn="bad")
    with pytest.raises(CodecValidationError, match="^record 3 "):
        write_tap_file(tmp_path / "f.tap", make_header(), records)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rewrite_keeps_the_previous_file_untouched(tmp_path: Path):
    target = tmp_path / "f.tap"
    target.write_bytes(b"previous export")
    with pytest.raises(CodecValidationError):
        write_tap_file(target, make_header(), [make_cdr(1), make_cdr(1)])
    assert target.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["f.tap"]


def test_an_exception_in_the_with_block_aborts(tmp_path: Path):
    with pytest.raises(RuntimeError):
        with TapFileWriter(tmp_path / "f.tap", make_header()) as writer:
            writer.add_all(_records(10))
            raise RuntimeError("source failed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="closed or aborted"):
        writer.add(make_cdr(11))
    with pytest.raises(ValueError, match="aborted"):
        writer.close()


def test_close_is_idempotent(tmp_path: Path):
    writer = TapFileWriter(tmp_path / "f.tap", make_header(), fsync=False)
    writer.add(make_cdr(1))
    first = writer.close()
    assert writer.close() is first
    with pytest.raises(ValueError, match="closed or aborted"):
        writer.add(make_cdr(2))


def test_header_errors_come_before_any_file_is_created(tmp_path: Path):
    with pytest.raises(CodecValidationError, match="^header: "):
        TapFileWriter(tmp_path / "f.tap", make_header(file_sequence_number=0))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("failure", [OSError(18, "cross-device"), AttributeError("no copy_file_range")])
def test_user_space_copy_when_the_kernel_copy_is_unavailable(tmp_path: Path, monkeypatch, failure):
    def unavailable(*args, **kwargs):
        raise failure

    monkeypatch.setattr(os, "copy_file_range", unavailable)
    records = list(_records(50))
    write_tap_file(tmp_path / "f.tap", make_header(), records, fsync=False)
    assert (tmp_path / "f.tap").read_bytes() == encode_tap_file(make_header(), records)


def test_records_flush_to_the_spool_in_bounded_buffers(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(writer_module, "_FLUSH_BYTES", 4096)
    records = list(_records(200))
    with TapFileWriter(tmp_path / "f.tap", make_header(), fsync=False) as writer:
        writer.add_all(records)
        assert writer._pending_size < 4096  # everything above the threshold went to the spool
    assert (tmp_path / "f.tap").read_bytes() == encode_tap_file(make_header(), records)


def _peak_while_writing(path: Path, count: int) -> int:
    tracemalloc.start()
    try:
        with TapFileWriter(path, make_header(), fsync=False) as writer:
            writer.add_all(_records(count))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_record_count(tmp_path: Path):
    _peak_while_writing(tmp_path / "warm-up.tap", 100)  # one-time allocations (compiled modules, caches)
    small = _peak_while_writing(tmp_path / "small.tap", 4_000)
    large = _peak_while_writing(tmp_path / "large.tap", 16_000)
    assert (tmp_path / "large.tap").stat().st_size > 3 * (tmp_path / "small.tap").stat().st_size
    # Four times the records, about the same peak: one write buffer plus small caches.
    assert large < small * 1.5 + 256 * 1024, (small, large)
