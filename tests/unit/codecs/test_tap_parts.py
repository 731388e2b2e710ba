"""A TAP file written in two parts (records 1 … k here, k+1 … n elsewhere) has the bytes of the
one-pass writer, on every split, in every time zone (offset codes), with several SMSCs."""

from __future__ import annotations

import datetime as dt
import pickle
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdr_mediation.codecs.errors import CodecValidationError
from cdr_mediation.codecs.tap import TapFileWriter, write_tap_file
from cdr_mediation.codecs.tap.parts import TapPartWriter, code_tables_met
from cdr_mediation.codecs.tap.writer import CodeTables, PartMismatch

from .codec_factories import files, make_cdr, make_header, replace


def met(records) -> tuple[list[str], list[str]]:
    """What `cdr_store.first_met` reads from PostgreSQL, from the records themselves."""
    smsc_ids = list(dict.fromkeys(cdr.smsc_id for cdr in records))
    minutes = list(dict.fromkeys(m for cdr in records for m in (cdr.submitted_at[:16], cdr.done_at[:16])))
    return smsc_ids, minutes


def write_in_two_parts(directory: Path, header, records, split: int, tables: CodeTables | None = None) -> bytes:
    start = tables if tables is not None else code_tables_met(header, *met(records[:split]))
    with TapPartWriter(directory / "events", header, tables=start, index_base=split) as later:
        later.add_all(records[split:])
    # The part crosses a process boundary in the exporter.
    part = pickle.loads(pickle.dumps(later.part))
    with TapFileWriter(directory / "two.tap", header) as writer:
        writer.add_all(records[:split])
        writer.append_part(part)
    return (directory / "two.tap").read_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files(min_records=1, max_records=12), st.data())
def test_every_split_gives_the_one_pass_bytes(tmp_path: Path, file, data) -> None:
    header, records = file
    split = data.draw(st.integers(0, len(records)))
    one_pass = tmp_path / "one.tap"
    write_tap_file(one_pass, header, records)
    assert write_in_two_parts(tmp_path, header, records, split) == one_pass.read_bytes()


def _header(**overrides):
    return make_header(transfer_cut_off=dt.datetime(2026, 4, 1, tzinfo=dt.timezone.utc),
                       file_available=dt.datetime(2026, 4, 1, 1, tzinfo=dt.timezone.utc), **overrides)


def _day(count: int):
    """Records over a DST change in Berlin (two offset codes), SMSCs met in another order later."""
    records = []
    for seq in range(1, count + 1):
        hour = seq * 24 // count  # 2026-03-29 01:00 UTC: +0100 → +0200
        stamp = f"2026-03-29T{min(hour, 23):02d}:{seq % 60:02d}:00.000Z" if hour < 24 else "2026-03-29T23:59:00.000Z"
        smsc = ("smsc-b", "smsc-a", "smsc-c")[(seq * 7) % 3] if seq > count // 2 else ("smsc-a", "smsc-b")[seq % 2]
        records.append(make_cdr(seq, cdr_id=f"c-{seq}", submitted_at=stamp, done_at=stamp, smsc_id=smsc))
    return records


def test_a_day_over_a_dst_change_splits_anywhere(tmp_path: Path) -> None:
    header = _header(time_zone="Europe/Berlin")
    records = _day(48)
    write_tap_file(tmp_path / "one.tap", header, records)
    for split in (1, 2, 24, 47):
        assert write_in_two_parts(tmp_path, header, records, split) == (tmp_path / "one.tap").read_bytes(), split


def test_a_part_that_started_from_other_codes_is_refused(tmp_path: Path) -> None:
    records = _day(10)
    header = _header()
    assert code_tables_met(header, *met(records[:5])) == CodeTables(("smsc-b", "smsc-a"), ("+0430",))
    wrong = CodeTables(("smsc-a", "smsc-b"), ("+0430",))
    with pytest.raises(PartMismatch, match="started with codes"):
        write_in_two_parts(tmp_path, header, records, 5, tables=wrong)
    assert not (tmp_path / "two.tap").exists()


def test_an_invalid_record_in_the_part_names_its_place_in_the_whole_file(tmp_path: Path) -> None:
    records = _day(10)
    header = _header()
    records[7] = replace(records[7], msisdn="0049")
    writer = TapPartWriter(tmp_path / "events", header, tables=code_tables_met(header, *met(records[:5])),
                           index_base=5)
    with pytest.raises(CodecValidationError) as raised, writer:
        writer.add_all(records[5:])
    assert raised.value.record_index == 8
    assert pickle.loads(pickle.dumps(raised.value)).args == raised.value.args
    assert not (tmp_path / "events").exists()


def test_no_records_after_an_appended_part(tmp_path: Path) -> None:
    records = _day(6)
    header = _header()
    with TapPartWriter(tmp_path / "events", header, tables=code_tables_met(header, *met(records[:3])),
                       index_base=3) as later:
        later.add_all(records[3:5])
    writer = TapFileWriter(tmp_path / "f.tap", header)
    writer.add_all(records[:3])
    writer.append_part(later.part)
    with pytest.raises(ValueError, match="out of chain order"):
        writer.add_all(records[5:])
    writer.abort()
