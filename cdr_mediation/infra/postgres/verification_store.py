"""What the verifier reads from PostgreSQL besides the chains (docs/verification.md).

* One verification at a time: a session advisory lock (`try_verification_lock`) held by the
  connection that runs it, so several exporter workers (and the portal, and `cdrmed verify`)
  never recompute the same chains at once; the others skip. It is released at the end of the
  run, or by PostgreSQL when the connection ends (a worker killed mid-run holds nothing).
* The recorded runs: the last run over all operators (is the daily one due? when did it last
  succeed?) and, per operator, the latest run that covered it — which the exporter reads to halt
  that operator's exports under CDR_CHAIN_VERIFY_FAIL_FAST. Both come from the `chain.verify`
  rows of the audit log: the halt and its lifting are recorded in the hash-chained log itself,
  not in a flag a person could flip without a trace.
* The export steps that recorded a checkpoint or its signature.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from cdr_mediation.domain.audit import CHAIN_VERIFY
from cdr_mediation.domain.verification import BUILT_EVENTS, SIGNED_EVENT

# Session-level advisory lock of a verification run ("cdrverif"); other keys: outbox.py, 0006.
VERIFY_LOCK_KEY = 7161975165834229350
# The `scope` member of a run's detail when it covered every operator (the daily job's kind).
SCOPE_ALL = "all"
SCOPE_OPERATORS = "operators"


async def try_verification_lock(conn) -> bool:
    """Take the verification lock on this connection; False if another session holds it."""
    return await conn.fetchval("SELECT pg_try_advisory_lock($1)", VERIFY_LOCK_KEY)


async def release_verification_lock(conn) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1)", VERIFY_LOCK_KEY)


@dataclasses.dataclass(frozen=True)
class FullRuns:
    """The database's clock and the last recorded runs over all operators (None: never)."""

    now: dt.datetime
    last_at: dt.datetime | None
    last_ok_at: dt.datetime | None


async def full_runs(conn) -> FullRuns:
    """When a verification of all operators was last recorded, and last recorded intact (the
    audit row's `at`, the database's clock; the index on (action, audit_seq) finds them from the
    newest run backwards)."""
    row = await conn.fetchrow(
        "SELECT now() AS now, "
        "(SELECT at FROM audit_log WHERE action = $1 AND detail->>'scope' = $2 ORDER BY audit_seq DESC LIMIT 1) "
        "  AS last_at, "
        "(SELECT at FROM audit_log WHERE action = $1 AND detail->>'scope' = $2 AND detail->'ok' = 'true'::jsonb "
        "  ORDER BY audit_seq DESC LIMIT 1) AS last_ok_at",
        CHAIN_VERIFY, SCOPE_ALL)
    return FullRuns(row["now"], _optional_time(row["last_at"]), _optional_time(row["last_ok_at"]))


def audit_time(at: str) -> dt.datetime:
    """An audit row's `at` (`YYYY-MM-DDTHH:MM:SS.ffffffZ`, docs/audit.md §2) as an aware datetime."""
    return dt.datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)


def _optional_time(at: str | None) -> dt.datetime | None:
    return None if at is None else audit_time(at)


@dataclasses.dataclass(frozen=True)
class RecordedVerification:
    audit_seq: int
    at: str
    detail: Mapping[str, Any]


async def latest_verification_of(conn, operator_id: str) -> RecordedVerification | None:
    """The newest `chain.verify` row whose run covered the operator (refs.operator_ids holds it)."""
    row = await conn.fetchrow(
        "SELECT audit_seq, at, detail FROM audit_log WHERE action = $1 AND refs @> $2::jsonb "
        "ORDER BY audit_seq DESC LIMIT 1", CHAIN_VERIFY, json.dumps({"operator_ids": [operator_id]}))
    return None if row is None else RecordedVerification(row["audit_seq"], row["at"], json.loads(row["detail"]))


async def operator_known(conn, operator_id: str) -> bool:
    """Whether the system holds anything of this operator: chain rows, archived segments, exports."""
    return await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM cdr WHERE operator_id = $1) "
        "OR EXISTS (SELECT 1 FROM cdr_cold_segment WHERE operator_id = $1) "
        "OR EXISTS (SELECT 1 FROM export_file WHERE operator_id = $1)", operator_id)


@dataclasses.dataclass(frozen=True)
class ExportEvidence:
    """An export file and its steps that recorded a checkpoint or signed one, in step order."""

    operator_id: str
    day: str
    file_name: str
    day_closed: Mapping[str, Any]
    steps: list[tuple[int, str, Mapping[str, Any]]]  # (step, event, detail)


async def exports_with_checkpoints(conn, operator_ids: list[str] | None = None) -> list[ExportEvidence]:
    """Every export whose steps recorded a checkpoint (of these operators, or all), by operator
    and day, with its BUILT / REBUILT / SIGNED steps."""
    rows = await conn.fetch(
        "SELECT f.operator_id, f.day, f.file_name, f.day_closed, t.step, t.event, t.detail "
        "FROM export_file f JOIN export_transition t ON t.operator_id = f.operator_id AND t.day = f.day "
        "WHERE t.event = ANY($1::text[]) AND ($2::text[] IS NULL OR f.operator_id = ANY($2::text[])) "
        "ORDER BY f.operator_id, f.day, t.step",
        sorted(BUILT_EVENTS | {SIGNED_EVENT}), operator_ids)
    exports: list[ExportEvidence] = []
    for row in rows:
        day = row["day"].isoformat()
        if not exports or (exports[-1].operator_id, exports[-1].day) != (row["operator_id"], day):
            exports.append(ExportEvidence(row["operator_id"], day, row["file_name"], json.loads(row["day_closed"]), []))
        exports[-1].steps.append((row["step"], row["event"], json.loads(row["detail"])))
    return [export for export in exports if any(event in BUILT_EVENTS for _, event, _ in export.steps)]
