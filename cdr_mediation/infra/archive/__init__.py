"""The S3 object-lock archive of signed exports and cold CDR segments (docs/archive.md).

    archive = archive_store(settings)                         # or ObjectLockArchive(S3Endpoint(...))
    obj = await archive.put_file(key, path, retain_until=...) # ArchivedObject: STORED or ALREADY_ARCHIVED
    obj = await archive.head(key)                             # ArchivedObject | None
    obj = await archive.get_file(key, dest)                   # verified against the archived SHA-256

Everything is stored once under COMPLIANCE retention and read back before it counts as
archived. Errors: `ArchiveUnavailable` (retry with backoff) or a permanent `ArchiveError`
(`ArchiveConflict`, `ArchiveVerificationFailed`, `ArchiveObjectMissing`: a person must act).
"""

from cdr_mediation.infra.archive.errors import (
    ArchiveConflict,
    ArchiveError,
    ArchiveObjectMissing,
    ArchiveUnavailable,
    ArchiveVerificationFailed,
    classify_s3_error,
)
from cdr_mediation.infra.archive.results import COMPLIANCE, ArchivedObject, ArchiveOutcome
from cdr_mediation.infra.archive.s3 import ObjectLockArchive, S3Endpoint, archive_store, check_key

__all__ = [
    "COMPLIANCE",
    "ArchiveConflict",
    "ArchiveError",
    "ArchiveObjectMissing",
    "ArchiveOutcome",
    "ArchiveUnavailable",
    "ArchiveVerificationFailed",
    "ArchivedObject",
    "ObjectLockArchive",
    "S3Endpoint",
    "archive_store",
    "check_key",
    "classify_s3_error",
]
