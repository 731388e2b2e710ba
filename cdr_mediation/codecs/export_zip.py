"""The ZIP an export is delivered in, with every byte fixed by its content (issue 6).

`zipfile` would write the current time, the platform's "made by" system and the file system's
permissions; here each member gets the file's cut-off time as its date (DOS time, two-second
resolution), a fixed system and mode, no comment and no extra fields, in the order given, so the
same members and cut-off give the same ZIP bytes, which the HSM then signs (CMS) and a rebuild
compares. Members are streamed from disk: a ten-million-record data file is never in memory.

Compression is DEFLATE at zlib's default level (6) through the system zlib. zlib has produced the same output for
the same input and level for decades, but that is a property of the library, not a standard: the
content itself stays provable regardless, because the signed checkpoint carries the SHA-256 of
the uncompressed data file (`domain/checkpoint.py`), and `cdrmed export rebuild` reports which of
ZIP bytes and content differ.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import stat
import zipfile
from pathlib import Path
from typing import Callable, Sequence

COMPRESSION = zipfile.ZIP_DEFLATED
UNIX = 3  # "version made by" host system: a constant, whatever machine builds the file
MEMBER_MODE = stat.S_IFREG | 0o444
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class ZipMember:
    """One member: a file on disk (`path`), bytes (`data`), or bytes made when the member is
    written (`later`), after the members before it — the checkpoint, which states the SHA-256 of
    the data member that is compressed just before it, while that digest is taken on another core."""

    name: str
    path: Path | None = None
    data: bytes | None = None
    later: Callable[[], bytes] | None = None

    def __post_init__(self) -> None:
        if sum(source is not None for source in (self.path, self.data, self.later)) != 1:
            raise ValueError(f"member {self.name!r}: give exactly one of path, data or later")
        if not self.name or self.name.startswith("/") or ".." in self.name.split("/") or "\\" in self.name:
            raise ValueError(f"member name {self.name!r} is not a plain relative name")



def _dos_time(cut_off: dt.datetime) -> tuple[int, int, int, int, int, int]:
    if cut_off.tzinfo is None or cut_off.utcoffset() != dt.timedelta(0):
        raise ValueError("the cut-off must be a UTC datetime")
    if cut_off.year < 1980:
        raise ValueError("ZIP dates start in 1980")
    return (cut_off.year, cut_off.month, cut_off.day, cut_off.hour, cut_off.minute, cut_off.second - cut_off.second % 2)


def write_export_zip(destination: Path, members: Sequence[ZipMember], cut_off: dt.datetime) -> int:
    """Write the ZIP to `destination` (replaced atomically); returns its size in bytes."""
    names = [member.name for member in members]
    if len(set(names)) != len(names):
        raise ValueError(f"member names repeat: {names}")
    date_time = _dos_time(cut_off)
    partial = destination.with_name(f".{destination.name}.partial")
    with zipfile.ZipFile(partial, "w") as archive:
        for member in members:
            data = member.later() if member.later is not None else member.data
            info = zipfile.ZipInfo(member.name, date_time=date_time)
            info.compress_type, info.create_system = COMPRESSION, UNIX
            info.external_attr = MEMBER_MODE << 16
            # known up front: zip64 is decided by size, not by a guess
            info.file_size = len(data) if data is not None else os.path.getsize(member.path)
            with archive.open(info, "w") as sink:
                if data is not None:
                    sink.write(data)
                else:
                    with open(member.path, "rb") as source:
                        shutil.copyfileobj(source, sink, _CHUNK)
    os.replace(partial, destination)
    return destination.stat().st_size
