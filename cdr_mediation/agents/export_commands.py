"""What a person does to an export (`cdrmed export …`): look, resume, issue a corrected file.

Each command is one recorded lifecycle step with the person as its actor and a ticket reference
in its evidence, so the audit trail says who moved the file, why, and on what authority; its
audit row records the person with the role `admin` (whoever runs `cdrmed` with the deployment's
database credentials operates the system):

* `status` lists exports and their states (JSON lines);
* `resume` takes a MANUAL file back to PENDING once its cause is fixed (HSM back, access
  restored, the receiver's conflicting file cleared); the exporters' follow-up drives it on, and
  every step is idempotent (`domain/export_lifecycle.py`);
* `reissue` answers a RAP rejection: the file is built again from the stored CDRs with the
  configuration in force now (the correction is in the configuration or in the code), under the
  same name and sequence number (TD.57: a rejected file is replaced, not renumbered), and the
  REBUILT step records both digests. The follow-up signs and delivers it. The exporters must run
  with the same configuration, or a worker that has to build the file again gets other bytes and
  halts rather than send them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from cdr_mediation.agents.export_build import build_day_export
from cdr_mediation.domain.access import Role
from cdr_mediation.domain.day_close import DayClosed
from cdr_mediation.domain.export_config import ExportConfig
from cdr_mediation.domain.export_lifecycle import ExportEvent, ExportState
from cdr_mediation.infra.postgres.export_store import export_row, history, open_exports, record_transition


@dataclasses.dataclass(frozen=True)
class PersonsAct:
    """Who acts, and the ticket that authorises it: both required, both recorded."""

    actor: str
    ticket: str

    def __post_init__(self) -> None:
        if not self.actor.strip() or not self.ticket.strip():
            raise ValueError("an actor and a ticket reference are required")

    def evidence(self) -> dict[str, str]:
        return {"actor": self.actor, "ticket": self.ticket}


async def export_status(conn, operator_id: str | None = None) -> list[dict[str, Any]]:
    _, rows = await open_exports(conn, frozenset(ExportState))
    return [{"operator_id": r.operator_id, "day": r.day, "file_name": r.file_name, "state": r.state.value,
             "since": r.entered_at.isoformat(), "last_event": r.last_event.value if r.last_event else None}
            for r in rows if operator_id is None or r.operator_id == operator_id]


async def resume_export(conn, operator_id: str, day: str, act: PersonsAct) -> ExportState:
    async with conn.transaction():
        return await record_transition(conn, operator_id, day, ExportEvent.RESUMED, actor=act.actor,
                                       detail=act.evidence(), actor_role=Role.ADMIN.value)


async def reissue_export(conn, config: ExportConfig, out_dir: Path, operator_id: str, day: str,
                         act: PersonsAct) -> dict[str, Any]:
    """Build the rejected file again and record REBUILT; the step's detail is returned."""
    row = await export_row(conn, operator_id, day)
    if row.state is not ExportState.REJECTED:
        raise ValueError(f"{operator_id} {day} is {row.state.value}: only a REJECTED export is reissued")
    steps = await history(conn, operator_id, day)
    previous = next(s.detail for s in reversed(steps) if s.event in (ExportEvent.BUILT, ExportEvent.REBUILT))
    rejection = next(s.detail for s in reversed(steps) if s.event is ExportEvent.REJECTED)
    closed = DayClosed.from_dict(row.day_closed)
    folder = out_dir / operator_id
    folder.mkdir(parents=True, exist_ok=True)
    async with conn.transaction():
        built = await build_day_export(conn, config, closed, folder)
    detail = {**act.evidence(), "file_name": built.file_name, "zip_sha256": built.zip_sha256,
              "checkpoint": built.checkpoint.to_dict(), "previous_zip_sha256": previous["zip_sha256"],
              "same_bytes": built.zip_sha256 == previous["zip_sha256"],
              "rejection_sha256": rejection.get("answer", {}).get("sha256")}
    async with conn.transaction():
        await record_transition(conn, operator_id, day, ExportEvent.REBUILT, actor=act.actor, detail=detail,
                                actor_role=Role.ADMIN.value)
    return detail
