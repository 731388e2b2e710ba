"""What a successful delivery or response fetch returns: plain values the lifecycle records."""

from __future__ import annotations

import dataclasses
import enum
import hashlib

from cdr_mediation.infra.delivery.files import AnswerKind


class Outcome(str, enum.Enum):
    STORED = "stored"  # the receiver did not have the file; it has it now
    ALREADY_DELIVERED = "already_delivered"  # it had these exact bytes already: nothing was sent again


@dataclasses.dataclass(frozen=True, slots=True)
class DeliveryReceipt:
    """Evidence of one delivery: which bytes (by digest) are now held by the receiver, where."""

    channel: str  # "sftp" | "https"
    file_name: str
    sha256: str
    size: int
    outcome: Outcome
    location: str  # sftp://user@host:port/inbox/NAME or the HTTPS URL of the file


@dataclasses.dataclass(frozen=True, slots=True)
class ResponseFile:
    """An answer of the receiver to one delivered file, exactly as fetched."""

    name: str  # e.g. CDAFGAWAFGRA00042.rap
    file_name: str  # the delivered file it answers
    kind: AnswerKind
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()
