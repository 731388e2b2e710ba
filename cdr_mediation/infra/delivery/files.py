"""What crosses the wire: the file handed over, the names it may have, and the names of the answers.

Both channels (SFTP and HTTPS) and the regulator simulator of the local stack agree on these
rules, so they live in one place:

* a delivered file has a plain name (no directories, no leading dot) and is identified by
  name *and* SHA-256: the same name with the same digest is the same delivery;
* an upload in progress has a hidden temporary name derived from the final name and the
  digest, so the receiver never mistakes a partial upload for a file, and a retry after a
  crash overwrites its own leftover instead of piling up new ones;
* the receiver answers file `N` with `N.ack` (accepted) or `N.rap` (a RAP 1.05 return).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

from cdr_mediation.infra.delivery.errors import InvalidFileName

# One read or write on the wire; big enough to amortise round trips, small enough that a
# multi-gigabyte export never sits in memory.
CHUNK_SIZE = 1 << 20

_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
# TD.57 file naming: CD (commercial) or TD (test data), sender and recipient TADIG codes,
# five-digit file sequence number.
_TAP_FILE_NAME = re.compile(r"(CD|TD)([A-Z]{3}[A-Z0-9]{2})([A-Z]{3}[A-Z0-9]{2})(\d{5})")


def check_file_name(name: str, *, channel: str) -> str:
    """`name` if it is a plain file name both channels and the receiver can use, else InvalidFileName."""
    if not isinstance(name, str) or not _FILE_NAME.fullmatch(name) or ".." in name:
        raise InvalidFileName(
            f"{name!r} is not a deliverable file name (letters, digits, '.', '_', '-'; starts with a letter "
            "or digit; at most 200 characters; no '..')",
            channel=channel, file_name=str(name),
        )
    return name


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def temporary_name(file_name: str, sha256: str) -> str:
    """Where an upload of these bytes lands before it is renamed to `file_name`.

    Hidden (leading dot): receivers and listings of final files skip it. Derived from the
    digest rather than random: a retry of the same bytes after a crash reuses the leftover.
    """
    return f".{file_name}.{sha256[:16]}.part"


def is_final_name(name: str) -> bool:
    """True for a completed delivery, false for an upload in progress or anything else."""
    return bool(_FILE_NAME.fullmatch(name)) and ".." not in name


class AnswerKind(str, enum.Enum):
    ACK = "ack"  # the receiver accepted the file
    RAP = "rap"  # the receiver returned it: a RAP 1.05 file


def response_name(file_name: str, kind: AnswerKind) -> str:
    return f"{file_name}.{kind.value}"


def parse_response_name(name: str) -> tuple[str, AnswerKind] | None:
    """(answered file name, kind) for a response file name, None for anything else."""
    stem, dot, suffix = name.rpartition(".")
    if not dot or not is_final_name(name):
        return None
    try:
        return stem, AnswerKind(suffix)
    except ValueError:
        return None


@dataclasses.dataclass(frozen=True, slots=True)
class TapFileName:
    """A TD.57 file name such as `CDAFGAWAFGRA00042`."""

    sender: str
    recipient: str
    file_sequence_number: int
    test_data: bool = False

    def __str__(self) -> str:
        return f"{'TD' if self.test_data else 'CD'}{self.sender}{self.recipient}{self.file_sequence_number:05d}"

    @classmethod
    def parse(cls, name: str) -> "TapFileName | None":
        """The parts of a TD.57 name; None if `name` (extension ignored) is not one."""
        match = _TAP_FILE_NAME.fullmatch(name.split(".", 1)[0])
        if not match or int(match[4]) == 0:
            return None
        return cls(match[2], match[3], int(match[4]), match[1] == "TD")


@dataclasses.dataclass(frozen=True)
class OutgoingFile:
    """The bytes of one export file, from memory or from disk, with their digest.

    A file on disk is hashed once here and then streamed in chunks, so a large export is
    never held in memory; it must not change until the delivery returns.
    """

    name: str
    sha256: str
    size: int
    data: bytes | None = None
    path: Path | None = None

    @classmethod
    def from_bytes(cls, name: str, data: bytes, *, channel: str) -> "OutgoingFile":
        return cls(check_file_name(name, channel=channel), sha256_hex(data), len(data), data=bytes(data))

    @classmethod
    def from_path(cls, name: str, path: Path, *, channel: str) -> "OutgoingFile":
        digest, size = hashlib.sha256(), 0
        with open(path, "rb") as source:
            while chunk := source.read(CHUNK_SIZE):
                digest.update(chunk)
                size += len(chunk)
        return cls(check_file_name(name, channel=channel), digest.hexdigest(), size, path=Path(path))

    def chunks(self) -> Iterator[bytes]:
        if self.data is not None:
            for offset in range(0, len(self.data), CHUNK_SIZE):
                yield self.data[offset:offset + CHUNK_SIZE]
            return
        assert self.path is not None
        with open(self.path, "rb") as source:
            while chunk := source.read(CHUNK_SIZE):
                yield chunk
