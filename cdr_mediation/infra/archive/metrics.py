"""The one failure counter of every archive job (cold tier, and the exporter's archive step).

Defined once here: prometheus-client refuses a second registration of the same name, and an
alert on `cdr_archive_failures_total` should see every job's failures by the same `kind`.
"""

from __future__ import annotations

from prometheus_client import Counter

from cdr_mediation.infra.archive.errors import (
    ArchiveConflict,
    ArchiveError,
    ArchiveObjectMissing,
    ArchiveUnavailable,
    ArchiveVerificationFailed,
)

ARCHIVE_FAILURES = Counter(
    "cdr_archive_failures_total",
    "Archive attempts that failed, by kind: unavailable (S3 down: retried, hot data kept), conflict, "
    "verification, missing, refused (S3 said no), chain_break, database",
    ["kind"],
)


def failure_kind(exc: BaseException) -> str:
    """The `kind` label of a failed archive attempt."""
    if isinstance(exc, ArchiveUnavailable):
        return "unavailable"
    if isinstance(exc, ArchiveConflict):
        return "conflict"
    if isinstance(exc, ArchiveVerificationFailed):
        return "verification"
    if isinstance(exc, ArchiveObjectMissing):
        return "missing"
    if isinstance(exc, ArchiveError):
        return "refused"
    return "other"
