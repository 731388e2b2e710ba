"""The export ZIP: same members and cut-off, same bytes; nothing from the machine or the clock."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import zipfile

import pytest

from cdr_mediation.codecs.export_zip import MEMBER_MODE, ZipMember, write_export_zip

CUT_OFF = dt.datetime(2026, 11, 2, 2, 0, 1, tzinfo=dt.timezone.utc)


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "CDOPAAAREGUL00007"
    # Varied content, a few MB: exercises streaming and real compression.
    path.write_bytes(b"".join(hashlib.sha256(str(i).encode()).hexdigest().encode() * 3 for i in range(40_000)))
    return path


def _members(data_file):
    return [ZipMember(data_file.name, path=data_file), ZipMember("checkpoint.json", data=b'{"format":"x"}')]


def test_the_same_members_and_cut_off_give_the_same_bytes(tmp_path, data_file) -> None:
    first, second = tmp_path / "a.zip", tmp_path / "b.zip"
    write_export_zip(first, _members(data_file), CUT_OFF)
    os.utime(data_file, (0, 0))  # the file system's times must not matter
    os.chmod(data_file, 0o600)  # nor its permissions
    write_export_zip(second, _members(data_file), CUT_OFF)
    assert first.read_bytes() == second.read_bytes()


def test_members_come_back_exactly_with_fixed_metadata(tmp_path, data_file) -> None:
    target = tmp_path / "export.zip"
    size = write_export_zip(target, _members(data_file), CUT_OFF)
    assert size == target.stat().st_size < data_file.stat().st_size  # compressed
    with zipfile.ZipFile(target) as archive:
        assert archive.testzip() is None
        infos = archive.infolist()
        assert [i.filename for i in infos] == [data_file.name, "checkpoint.json"]
        assert archive.read(data_file.name) == data_file.read_bytes()
        for info in infos:
            assert info.date_time == (2026, 11, 2, 2, 0, 0)  # the cut-off, DOS two-second resolution
            assert (info.create_system, info.external_attr >> 16, info.extra, info.comment) == (3, MEMBER_MODE, b"", b"")
    assert not list(tmp_path.glob(".*partial"))


def test_a_different_cut_off_or_member_order_gives_different_bytes(tmp_path, data_file) -> None:
    base, later, swapped = tmp_path / "base.zip", tmp_path / "later.zip", tmp_path / "swapped.zip"
    write_export_zip(base, _members(data_file), CUT_OFF)
    write_export_zip(later, _members(data_file), CUT_OFF + dt.timedelta(days=1))
    write_export_zip(swapped, list(reversed(_members(data_file))), CUT_OFF)
    assert len({p.read_bytes() for p in (base, later, swapped)}) == 3


@pytest.mark.parametrize("members,cut_off,message", [
    ([ZipMember("a", data=b"1"), ZipMember("a", data=b"2")], CUT_OFF, "repeat"),
    ([ZipMember("a", data=b"1")], CUT_OFF.replace(tzinfo=None), "UTC"),
    ([ZipMember("a", data=b"1")], dt.datetime(1979, 12, 31, tzinfo=dt.timezone.utc), "1980"),
])
def test_refusals(tmp_path, members, cut_off, message) -> None:
    with pytest.raises(ValueError, match=message):
        write_export_zip(tmp_path / "x.zip", members, cut_off)
    assert not (tmp_path / "x.zip").exists()


@pytest.mark.parametrize("name", ["", "/etc/passwd", "../up", "a/../../b", "dir\\file"])
def test_member_names_are_plain_relative_names(name) -> None:
    with pytest.raises(ValueError, match="plain relative name"):
        ZipMember(name, data=b"x")


def test_a_member_has_exactly_one_source(tmp_path) -> None:
    for sources in ({}, {"path": tmp_path / "f", "data": b""}, {"data": b"", "later": bytes}):
        with pytest.raises(ValueError, match="exactly one"):
            ZipMember("ok", **sources)


def test_a_member_made_later_zips_as_its_bytes(tmp_path) -> None:
    data_file = tmp_path / "data.tap"
    data_file.write_bytes(b"tap" * 1000)
    made: list[bool] = []

    def checkpoint() -> bytes:
        made.append(True)
        return b'{"format":"x"}'

    later = [ZipMember("data.tap", path=data_file), ZipMember("checkpoint.json", later=checkpoint)]
    write_export_zip(tmp_path / "out.zip", later, CUT_OFF)
    write_export_zip(tmp_path / "bytes.zip", [later[0], ZipMember("checkpoint.json", data=b'{"format":"x"}')], CUT_OFF)
    assert (tmp_path / "out.zip").read_bytes() == (tmp_path / "bytes.zip").read_bytes()
    assert made == [True]
