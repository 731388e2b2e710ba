"""The cold-segment file on disk: gzip of JSON lines, written so the same lines give the same bytes.

gzip (RFC 1952) headers carry a modification time and an optional original file name; both are
fixed here (mtime 0, no name; Python writes OS = 255 "unknown"), and the compression level is
fixed, so the file is a function of its lines for a given zlib. A different deflate
implementation may compress the same lines to other bytes: that is why the manifest also states
the SHA-256 of the decompressed content, which is the same everywhere (domain/cold_segment.py).

Files are streamed in both directions: a segment of millions of entries never sits in memory.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from cdr_mediation.domain.cold_segment import SegmentFileDigest
from cdr_mediation.infra.file_digest import file_sha256_and_size

COMPRESS_LEVEL = 6  # part of the byte-for-byte reproducibility of a segment file; never change it silently
_READ_CHUNK = 1 << 20


class _HashingSink:
    """The raw file under the gzip stream: counts and hashes the compressed bytes as written."""

    def __init__(self, raw) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        view = memoryview(data)
        self.digest.update(view)
        self.size += len(view)
        return self._raw.write(view)

    def flush(self) -> None:
        self._raw.flush()


class SegmentFileWriter:
    """Write a segment's lines to `path` (gzip, deterministic header); `close` returns the digests.

    Use as a context manager; on an exception the partial file is removed."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._raw = open(self.path, "wb")
        self._sink = _HashingSink(self._raw)
        # filename="" keeps the name out of the header (FNAME unset); mtime=0 keeps the clock out.
        self._gzip = gzip.GzipFile(filename="", mode="wb", fileobj=self._sink, compresslevel=COMPRESS_LEVEL, mtime=0)
        self._content = hashlib.sha256()
        self._content_size = 0
        self._closed: SegmentFileDigest | None = None

    def write(self, line: bytes) -> None:
        self._content.update(line)
        self._content_size += len(line)
        self._gzip.write(line)

    def close(self) -> SegmentFileDigest:
        if self._closed is None:
            self._gzip.close()  # writes the trailer (CRC-32, size) through the sink
            self._raw.flush()
            os.fsync(self._raw.fileno())
            self._raw.close()
            self._closed = SegmentFileDigest(self._sink.digest.hexdigest(), self._sink.size,
                                             self._content.hexdigest(), self._content_size)
        return self._closed

    def __enter__(self) -> "SegmentFileWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        self._gzip.close()
        self._raw.close()
        self.path.unlink(missing_ok=True)


def iter_segment_lines(path: Path) -> Iterator[bytes]:
    """The lines of a segment file, decompressed, each with its LF (a last line without one is
    returned as is, so the chain check sees exactly what is there). gzip checks its CRC-32 and
    length trailer at the end and raises on a corrupt or truncated file."""
    with gzip.open(path, "rb") as source:
        yield from source


file_sha256 = file_sha256_and_size  # (hex, size) of a segment file
