"""`run_codec_bench`: the shape of its result and that it writes (and removes) a real file."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from cdr_mediation.codecs.bench import bench_header, run_codec_bench, synthetic_cdrs
from cdr_mediation.codecs.tap import decode_tap_file, encode_tap_file


def test_result_has_exactly_the_agreed_keys(tmp_path: Path):
    result = run_codec_bench(2_500, directory=tmp_path)
    assert list(result) == ["records", "seconds", "records_per_s", "peak_rss_mb"]
    assert result["records"] == 2_500
    assert result["seconds"] > 0 and result["records_per_s"] > 0 and result["peak_rss_mb"] > 0
    assert list(tmp_path.iterdir()) == []  # the benchmark file lives in its own temporary directory


def test_synthetic_records_are_deterministic_and_valid():
    first = synthetic_cdrs(1, 300, 10_000)
    assert first == synthetic_cdrs(1, 300, 10_000)
    view = decode_tap_file(encode_tap_file(bench_header(), first))
    assert view.reconciliation_errors() == [] and len(view.records) == 300
    assert sum(1 for r in first if r.record_type.value == "VOID") == 3


def test_records_must_be_positive():
    with pytest.raises(ValueError):
        run_codec_bench(0, directory=tempfile.gettempdir())
