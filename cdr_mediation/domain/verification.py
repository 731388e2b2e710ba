"""What a verification run decides, without I/O (issue 7; docs/verification.md).

A run recomputes every operator's chain (`domain/chain.verify_chain`) and every export file's
checkpoint from the stored rows (`domain/checkpoint.CheckpointBuilder`, exactly as the build
does) and compares the latter with the checkpoint the BUILT / REBUILT step recorded. This module
holds the parts of that which are plain functions:

* `checkpoint_differences`: which members of a recorded checkpoint disagree with the recomputed
  one. Every member is compared except `data_sha256`, the digest of the TAP file, which depends
  on the export configuration as well and is checked by rebuilding the file
  (`cdrmed export rebuild`), not here;
* `file_generations`: the checkpoints an export's steps recorded, each with the SIGNED step that
  signed it (a rejected file is rebuilt under the same name: each generation was signed once and
  may be in the regulator's hands, so each is checked);
* `CheckpointVerdict`: one file's result, as the audit row and the portal report it;
* `operator_verdicts`: per operator, whether a recorded `chain.verify` run found it intact — what
  the exporter reads to halt an operator's exports under CDR_CHAIN_VERIFY_FAIL_FAST.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping
from typing import Any

# The members of `Checkpoint.to_dict()` that the stored rows and the export record determine.
COMPARED_MEMBERS = ("format", "operator_id", "day", "file_name", "file_sequence", "cut_off", "record_count",
                    "first_chain_seq", "last_chain_seq", "head_hash", "merkle_root", "totals")

# Export lifecycle events (`domain/export_lifecycle.ExportEvent` values) whose step records a
# checkpoint, and the one whose step records its signature.
BUILT_EVENTS = frozenset({"built", "rebuilt"})
SIGNED_EVENT = "signed"


class CheckpointStatus(str, enum.Enum):
    OK = "ok"  # recomputed equal to every recorded generation; signatures verify
    MISMATCH = "mismatch"  # a recorded checkpoint or its signature disagrees with the stored rows
    SKIPPED = "skipped"  # cannot be recomputed from the rows PostgreSQL holds (said why), not a break


@dataclasses.dataclass(frozen=True, slots=True)
class CheckpointVerdict:
    operator_id: str
    day: str
    file_name: str
    status: CheckpointStatus
    detail: str | None = None  # what disagrees, or why it was skipped

    @property
    def ok(self) -> bool:
        """A skipped file is no finding: it is reported, not counted as a break."""
        return self.status is not CheckpointStatus.MISMATCH

    def to_dict(self) -> dict[str, Any]:
        report: dict[str, Any] = {"operator_id": self.operator_id, "day": self.day, "file_name": self.file_name,
                                  "ok": self.ok, "status": self.status.value}
        if self.detail is not None:
            report["detail"] = self.detail
        return report


def checkpoint_differences(recorded: Mapping[str, Any], recomputed: Mapping[str, Any]) -> list[str]:
    """One line per compared member that differs (totals figure by figure), in `COMPARED_MEMBERS`
    order: ``"totals.amount_minor: recorded 70, recomputed 71"``. Empty when they agree."""
    differences: list[str] = []
    for member in COMPARED_MEMBERS:
        _differences(member, recorded.get(member), recomputed.get(member), differences)
    return differences


def _differences(name: str, was: Any, now: Any, into: list[str]) -> None:
    if was == now:
        return
    if isinstance(was, Mapping) and isinstance(now, Mapping):
        for key in sorted(set(was) | set(now)):
            _differences(f"{name}.{key}", was.get(key), now.get(key), into)
    else:
        into.append(f"{name}: recorded {was!r}, recomputed {now!r}")


@dataclasses.dataclass(frozen=True, slots=True)
class FileGeneration:
    """One recorded checkpoint of a file and the signing of it, if it was signed yet."""

    step: int  # the BUILT / REBUILT step
    zip_sha256: str
    checkpoint: Mapping[str, Any]
    signed: Mapping[str, Any] | None  # the SIGNED step's detail


def file_generations(steps: Iterable[tuple[int, str, Mapping[str, Any]]]) -> list[FileGeneration]:
    """The checkpoints an export's steps (step number, event, detail; in step order) recorded,
    each with the first SIGNED step after it and before the next build. A SIGNED step signs the
    ZIP built last (docs/export.md §1)."""
    generations: list[FileGeneration] = []
    for step, event, detail in steps:
        if event in BUILT_EVENTS and "checkpoint" in detail:
            generations.append(FileGeneration(step, detail.get("zip_sha256", ""), detail["checkpoint"], None))
        elif event == SIGNED_EVENT and generations and generations[-1].signed is None:
            generations[-1] = dataclasses.replace(generations[-1], signed=detail)
    return generations


def run_ok(chains_ok: Iterable[bool], verdicts: Iterable[CheckpointVerdict]) -> bool:
    """A run is a success when it verified at least one chain and found no break and no
    mismatch: a run that verified nothing proves nothing (the existing `cdrmed verify` rule)."""
    chains = list(chains_ok)
    return bool(chains) and all(chains) and all(verdict.ok for verdict in verdicts)


def operator_verdicts(detail: Mapping[str, Any]) -> dict[str, bool]:
    """Operator id → intact, from the detail of a `chain.verify` audit row (docs/audit.md §1).

    An operator is intact when its chain result is ok and none of its files' checkpoints
    mismatched. Rows written before checkpoints were verified have no `checkpoints` member; their
    chain results alone count."""
    verdicts: dict[str, bool] = {}
    for result in detail.get("results", ()):
        verdicts[result["operator_id"]] = verdicts.get(result["operator_id"], True) and result["ok"] is True
    for checkpoint in detail.get("checkpoints", ()):
        intact = checkpoint.get("status") != CheckpointStatus.MISMATCH.value
        verdicts[checkpoint["operator_id"]] = verdicts.get(checkpoint["operator_id"], True) and intact
    return verdicts
