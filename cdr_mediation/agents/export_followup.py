"""Following delivered exports up: the regulator's answers, time-outs, the deadline, resumed files.

A timer on every exporter (another exporter taking the same step loses the race on the step's
primary key) runs `poll_once` every `CDR_EXPORT_POLL_INTERVAL_S`:

* for every export that is not finished, `domain.export_followup.due` decides from its state,
  the database's clock and the answers fetched for its ZIP (`NAME.zip.ack`, `NAME.zip.rap`)
  what is due, and that is recorded: ACKED with the ACK document, REJECTED with the decoded
  RAP's reasons (TD.32 error codes per return), TIMED_OUT, DELIVERED again after a time-out
  (`redelivered`), MANUAL at the deadline;
* an export a person resumed (`cdrmed export resume`) or reissued (`cdrmed export reissue`)
  is driven on by the exporter here, because no closed-day record will come for it again, and
  so is one this worker halted for a chain break once a verification found its operator intact
  (`Exporter.drive_lifted`, CDR_CHAIN_VERIFY_FAIL_FAST);
* whatever a recorded step names for the archive and is not archived yet (S3 was down) is
  archived (`agents/export_archive.py`);
* the gauge `cdr_exports{state}` counts the exports in each state, so an alert can fire on
  MANUAL (a person must act) and on REJECTED.

A fetch that fails (endpoint down) is counted and logged; the export is judged without answers,
which only means it can time out or pass its deadline, as it would if the regulator were silent.
An answer this system cannot read (an ACK that is not the agreed JSON, a RAP that does not
decode) is never taken for an acceptance: it is counted, logged critical, and left for a person.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging

from prometheus_client import Counter, Gauge

from cdr_mediation.agents.exporter import ACTOR, HALTED, Exporter, ExportHalted, record_step
from cdr_mediation.agents.export_delivery import delivered_detail
from cdr_mediation.domain.day_close import DayClosed
from cdr_mediation.domain.export_archive import answer_key
from cdr_mediation.domain.export_followup import (
    ANSWERABLE,
    Action,
    AnswerKind,
    FollowUpTimers,
    OpenExport,
    RegulatorAnswer,
    ack_answer,
    due,
    rap_reasons,
    zip_answer_names,
)
from cdr_mediation.domain.export_lifecycle import ExportEvent, ExportState
from cdr_mediation.infra.delivery import DeliveryError
from cdr_mediation.infra.postgres.export_store import (
    ConcurrentTransition,
    ExportRow,
    export_state_counts,
    history,
    open_exports,
)
from cdr_mediation.settings import Settings

log = logging.getLogger(__name__)

S = ExportState
# Everything but the final state: answers, time-outs and the deadline concern all of them.
NOT_FINISHED = frozenset(S) - {S.ACKED}
# States the poll drives on itself: nobody else will (the closed-day record was consumed).
DRIVEN_HERE = frozenset({S.REBUILT})

EXPORTS = Gauge("cdr_exports", "Export files by lifecycle state (MANUAL: a person must act)", ["state"])
ANSWERS = Counter("cdr_export_answers_total", "Regulator answers fetched and recorded", ["kind"])
UNUSABLE_ANSWERS = Counter("cdr_export_answers_unusable_total",
                           "Regulator answers not acted on: unreadable, or for other bytes", ["reason"])
FETCH_FAILURES = Counter("cdr_export_answer_fetch_failures_total", "Answer fetches that failed", ["channel"])
POLLS = Counter("cdr_export_followup_polls_total", "Follow-up polls completed")


def timers(settings: Settings) -> FollowUpTimers:
    return FollowUpTimers(dt.timedelta(seconds=settings.export_ack_timeout_s),
                          dt.timedelta(seconds=settings.export_deadline_s))


class ExportFollowUp:
    def __init__(self, exporter: Exporter, follow_up_timers: FollowUpTimers) -> None:
        self.exporter = exporter
        self.timers = follow_up_timers
        self.sink = exporter.sink
        self._reported: set[tuple[str, str, str]] = set()

    async def poll_once(self) -> None:
        await self.exporter.drive_lifted()
        now, exports = await self.sink.commit(lambda conn: open_exports(conn, NOT_FINISHED))
        for row in exports:
            try:
                await self._follow(row, now)
            except ConcurrentTransition as exc:
                log.info("another exporter moved this export first", extra={"error": str(exc)})
            except ExportHalted as exc:  # one halted export must not stop the follow-up of the others
                HALTED.labels(reason=exc.reason).inc()
                log.critical("export halted; a person must act (it goes to MANUAL at its deadline)", extra={
                    "operator_id": row.operator_id, "day": row.day, "reason": exc.reason, "error": str(exc)})
        await self.exporter.archiver.archive_pending()
        counts = await self.sink.commit(export_state_counts)
        for state, count in counts.items():
            EXPORTS.labels(state=state.value).set(count)
        POLLS.inc()

    async def _follow(self, row: ExportRow, now: dt.datetime) -> None:
        closed = DayClosed.from_dict(row.day_closed)
        if row.state in DRIVEN_HERE or (row.state is S.PENDING and row.last_event is ExportEvent.RESUMED):
            await self.exporter.drive(closed)
            return
        steps = await self.sink.commit(lambda conn: history(conn, row.operator_id, row.day))
        delivered = next((s.detail for s in reversed(steps) if s.to_state is S.DELIVERED), None)
        export = OpenExport(
            row.operator_id, row.day, row.file_name, row.state, row.created_at, row.entered_at,
            delivered_sha256=delivered["sha256"] if delivered else None,
            seen_answers=frozenset(s.detail["answer"]["sha256"] for s in steps if "answer" in s.detail))
        answers = await self._answers(row) if row.state in ANSWERABLE else []
        decision = due(export, answers, now=now, timers=self.timers)
        for answer in decision.ignored:
            if (row.operator_id, row.day, answer.sha256) in self._reported:
                continue  # reported once per process, not on every poll
            self._reported.add((row.operator_id, row.day, answer.sha256))
            UNUSABLE_ANSWERS.labels(reason="other_bytes").inc()
            log.error("the regulator acknowledged other bytes than the ones delivered; ignored", extra={
                "operator_id": row.operator_id, "day": row.day, "answer": answer.name,
                "acknowledged_sha256": answer.acknowledged_sha256, "delivered_sha256": export.delivered_sha256})
        if decision.action is Action.RECORD:
            detail = {}
            if decision.answer:
                key = answer_key(row.operator_id, row.day, export.delivered_sha256, decision.answer.name)
                detail = {"answer": _answer_evidence(decision.answer), "archive_keys": [key]}
            if decision.event is ExportEvent.DEADLINE_PASSED:
                detail = {"deadline": (row.created_at + self.timers.deadline).isoformat(), "from_state": row.state.value}
            elif decision.event is ExportEvent.TIMED_OUT:
                detail = {"waited_s": (now - row.entered_at).total_seconds()}
            await record_step(self.sink, row.operator_id, row.day, decision.event, detail, actor=ACTOR)
            if decision.answer:
                ANSWERS.labels(kind=decision.answer.kind.value).inc()
                await self.exporter.archiver.archive_keys(row.operator_id, row.day, detail["archive_keys"])
        elif decision.action is Action.REDELIVER:
            outcome = await self.exporter.deliver_once(closed, row.file_name)
            if outcome.delivered:
                await record_step(self.sink, row.operator_id, row.day, ExportEvent.REDELIVERED,
                                  delivered_detail(*outcome.receipts), actor=ACTOR)

    async def _answers(self, row: ExportRow) -> list[RegulatorAnswer]:
        channel = self.exporter.channel
        try:
            fetched = await channel.fetch_responses(f"{row.file_name}.zip")
        except DeliveryError as exc:
            FETCH_FAILURES.labels(channel=channel.channel).inc()
            log.warning("regulator answers could not be fetched", extra={
                "operator_id": row.operator_id, "day": row.day, "channel": channel.channel, "error": str(exc)})
            return []
        names = zip_answer_names(row.file_name)
        answers = []
        for response in fetched:
            kind = names.get(response.name)
            if kind is None:
                continue
            try:
                answers.append(read_answer(response.name, kind, response.data))
            except ValueError as exc:
                if (row.operator_id, row.day, response.sha256) in self._reported:
                    continue
                self._reported.add((row.operator_id, row.day, response.sha256))
                UNUSABLE_ANSWERS.labels(reason="unreadable").inc()
                log.critical("a regulator answer could not be read; a person must look at it", extra={
                    "operator_id": row.operator_id, "day": row.day, "answer": response.name, "error": str(exc)})
        return answers


def read_answer(name: str, kind: AnswerKind, data: bytes) -> RegulatorAnswer:
    """An answer file as the follow-up judges it, with its bytes kept as evidence.

    ValueError if it cannot be read; a RAP is decoded (and validated) with the project's codec.
    """
    sha256 = hashlib.sha256(data).hexdigest()
    if kind is AnswerKind.ACK:
        answer = ack_answer(name, data, sha256)
    else:
        from cdr_mediation.codecs.rap import decode_rap

        try:
            rap = decode_rap(data)
        except Exception as exc:  # noqa: BLE001 - any decoding failure is an unreadable answer
            raise ValueError(f"{name}: RAP does not decode ({exc})") from None
        answer = RegulatorAnswer(name, kind, sha256, reasons=rap_reasons(rap), data=data)
    return answer


def _answer_evidence(answer: RegulatorAnswer) -> dict:
    evidence = {"name": answer.name, "kind": answer.kind.value, "sha256": answer.sha256}
    if answer.acknowledged_sha256:
        evidence["acknowledged_sha256"] = answer.acknowledged_sha256
    if answer.reasons is not None:
        evidence["reasons"] = dict(answer.reasons)
    # The answer's bytes themselves: an ACK or a fatal RAP is small, and the audit row then
    # proves what the regulator said without the server that said it.
    evidence["data_base64"] = base64.b64encode(answer.data).decode("ascii")
    return evidence
