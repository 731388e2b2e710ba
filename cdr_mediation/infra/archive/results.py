"""What the archive returns: plain values the exporter and the cold-tier job record as evidence."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum

COMPLIANCE = "COMPLIANCE"
# `retention_mode` / `retain_until` of an object that carries no object-lock retention at all
# (never the case for what `put_*` returns: it refuses to report such an object as archived).
NOT_LOCKED_MODE = ""
NOT_LOCKED_UNTIL = dt.datetime.min.replace(tzinfo=dt.timezone.utc)


class ArchiveOutcome(str, enum.Enum):
    STORED = "stored"  # S3 did not hold the key; it holds these bytes now
    # S3 held these exact bytes already (a retry after a crash): nothing was written again.
    # Also the outcome reported by `head` and `get_file`, which only look at what is there.
    ALREADY_ARCHIVED = "already_archived"


@dataclasses.dataclass(frozen=True)
class ArchivedObject:
    """One archived object version: which bytes (by SHA-256) S3 holds under `key`, and until when
    it must keep them."""

    key: str
    sha256: str  # lowercase hex of the whole object, as recorded at upload (x-amz-meta-sha256)
    size: int
    version_id: str | None  # the object version (a versioned bucket: object lock requires one)
    retention_mode: str  # "COMPLIANCE" for everything this system archives
    retain_until: dt.datetime  # UTC
    outcome: ArchiveOutcome

    @property
    def locked(self) -> bool:
        return self.retention_mode == COMPLIANCE
