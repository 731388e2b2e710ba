"""SHA-256 of a file on disk, read in chunks: exports and cold segments can be gigabytes, and the
same digest decides what was built, signed, delivered, archived and received."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK_SIZE = 1 << 20


def file_sha256_and_size(path: Path) -> tuple[str, int]:
    """(lowercase hex SHA-256, size in bytes) of the file at `path`."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as source:
        while chunk := source.read(CHUNK_SIZE):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def file_sha256(path: Path) -> str:
    return file_sha256_and_size(path)[0]
