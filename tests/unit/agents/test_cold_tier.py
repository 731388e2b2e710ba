"""The check a segment file passes before it is archived and after it is restored."""

from __future__ import annotations

from cdr_mediation.agents.cold_tier import check_segment_file
from cdr_mediation.codecs.cold_segment import SegmentFileWriter
from cdr_mediation.domain.cold_segment import SegmentContent, SegmentRange
from tests.unit.domain.domain_samples import chain_rows


def write(path, lines):
    with SegmentFileWriter(path) as writer:
        for line in lines:
            writer.write(line)
    return writer.close()


def _segment_file(tmp_path, count=40):
    rows = chain_rows("op-a", count)
    content = SegmentContent(SegmentRange("op-a", 1, count))
    digest = write(tmp_path / "s.jsonl.gz", [content.add(row) for row in rows])
    return content.manifest(prev_hash="0" * 64, head_hash=rows[-1]["record_hash"], file=digest)


async def test_a_written_segment_file_checks_out(tmp_path):
    manifest = _segment_file(tmp_path)
    check = await check_segment_file(manifest, tmp_path / "s.jsonl.gz")
    assert check.ok and check.verified == 40


async def test_a_truncated_or_corrupt_file_fails_the_check(tmp_path):
    manifest = _segment_file(tmp_path)
    data = (tmp_path / "s.jsonl.gz").read_bytes()
    (tmp_path / "s.jsonl.gz").write_bytes(data[: len(data) // 2])
    check = await check_segment_file(manifest, tmp_path / "s.jsonl.gz")
    assert not check.ok and "cannot be read as gzip" in check.problem
    (tmp_path / "s.jsonl.gz").write_bytes(b"not gzip at all")
    assert not (await check_segment_file(manifest, tmp_path / "s.jsonl.gz")).ok
