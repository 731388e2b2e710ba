"""What is due for a delivered export: the regulator's answer, the ACK time-out, the deadline.

After DELIVERED the file's fate is decided outside this system: the regulator answers with an
ACK or a RAP return, or says nothing. `due` is the one rule, evaluated on every poll for every
export that is still open, with the database's clock (`now`), so every worker decides the same:

1. an answer not seen before, to the bytes that were delivered, is recorded first: ACK → ACKED,
   a RAP return → REJECTED. It counts in DELIVERED, in TIMED_OUT and in MANUAL (a late answer
   is still the regulator's answer);
2. past the deadline (a fixed time after the day closed) an export that is not yet acknowledged
   goes to MANUAL: an alert, a person takes over;
3. a DELIVERED file without an answer after the ACK time-out is TIMED_OUT;
4. a TIMED_OUT file is delivered again (the receiver holds the same bytes: it is the regulator's
   cue, never a second file) and is DELIVERED again, which restarts its time-out.

Answers are matched to the ZIP by name (`NAME.zip.ack`, `NAME.zip.rap`). An answer is "not seen
before" if no recorded step holds its SHA-256: after a rejection and a corrected file the old
`.rap` may still be on the server, and it must not reject the corrected file. An ACK names the
SHA-256 it acknowledges; an ACK of other bytes than the delivered ones is ignored and counted
(the regulator acknowledged a file we did not send under that name).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cdr_mediation.domain.export_lifecycle import ExportEvent, ExportState

S = ExportState

# States an answer of the regulator can move (a late answer after a time-out or in MANUAL counts).
ANSWERABLE = frozenset({S.DELIVERED, S.TIMED_OUT, S.MANUAL})
# States the deadline takes to MANUAL: every state but the final one and MANUAL itself. Before
# delivery too: an exporter retrying a locked HSM or a closed endpoint re-reads the state before
# each try and stops when it finds MANUAL; one that halted (other bytes on a rebuild) is found here.
FOLLOWED_UP = frozenset(S) - {S.ACKED, S.MANUAL}


class AnswerKind(str, enum.Enum):
    ACK = "ack"
    RAP = "rap"


@dataclasses.dataclass(frozen=True)
class FollowUpTimers:
    ack_timeout: dt.timedelta  # DELIVERED without an answer this long → TIMED_OUT
    deadline: dt.timedelta  # after the day closed (the export was recorded): not ACKED → MANUAL

    def __post_init__(self) -> None:
        if self.ack_timeout <= dt.timedelta(0) or self.deadline <= dt.timedelta(0):
            raise ValueError("the ACK time-out and the deadline must be positive")


@dataclasses.dataclass(frozen=True)
class RegulatorAnswer:
    """An answer file as fetched: which kind, its bytes' digest, what it says (decoded)."""

    name: str
    kind: AnswerKind
    sha256: str
    acknowledged_sha256: str | None = None  # an ACK's `sha256`; None for a RAP
    reasons: Mapping[str, Any] | None = None  # a RAP's decoded reasons (`rap_reasons`)
    data: bytes = dataclasses.field(default=b"", repr=False)  # the file as fetched: kept as evidence


@dataclasses.dataclass(frozen=True)
class OpenExport:
    """An export as the follow-up sees it: its state, since when, and what was delivered."""

    operator_id: str
    day: str
    file_name: str
    state: ExportState
    created_at: dt.datetime  # when the day closed in this system (the export was recorded)
    entered_at: dt.datetime  # when the current state was reached
    delivered_sha256: str | None  # the ZIP of the latest DELIVERED step
    seen_answers: frozenset[str]  # SHA-256 of every answer already recorded


class Action(str, enum.Enum):
    RECORD = "record"  # record `event` with the answer's evidence
    REDELIVER = "redeliver"  # deliver the same files again, then record `redelivered`
    NOTHING = "nothing"


@dataclasses.dataclass(frozen=True)
class Due:
    action: Action
    event: ExportEvent | None = None
    answer: RegulatorAnswer | None = None
    ignored: tuple[RegulatorAnswer, ...] = ()  # answers that do not belong to the delivered bytes

    @classmethod
    def nothing(cls, ignored: Sequence[RegulatorAnswer] = ()) -> "Due":
        return cls(Action.NOTHING, ignored=tuple(ignored))


def zip_answer_names(file_name: str) -> dict[str, AnswerKind]:
    """The answer files that concern the export's ZIP (answers to the `.p7s` are not its fate)."""
    return {f"{file_name}.zip.{kind.value}": kind for kind in AnswerKind}


def deadline_of(export: OpenExport, timers: FollowUpTimers) -> dt.datetime:
    return export.created_at + timers.deadline


def due(export: OpenExport, answers: Iterable[RegulatorAnswer], *, now: dt.datetime,
        timers: FollowUpTimers) -> Due:
    """The one thing to do next for `export` (see the module docstring for the order)."""
    fresh, ignored = [], []
    for answer in sorted(answers, key=lambda a: a.name):
        if answer.sha256 in export.seen_answers:
            continue
        if answer.kind is AnswerKind.ACK and answer.acknowledged_sha256 != export.delivered_sha256:
            ignored.append(answer)
            continue
        fresh.append(answer)
    if export.state in ANSWERABLE and fresh:
        # A RAP beside an ACK for the same bytes: the return is the later, stronger word (a
        # regulator acknowledges receipt, then returns what it cannot accept).
        answer = next((a for a in fresh if a.kind is AnswerKind.RAP), fresh[0])
        event = ExportEvent.REJECTED if answer.kind is AnswerKind.RAP else ExportEvent.ACKED
        return Due(Action.RECORD, event, answer, tuple(ignored))
    if export.state in FOLLOWED_UP and now >= deadline_of(export, timers):
        return Due(Action.RECORD, ExportEvent.DEADLINE_PASSED, ignored=tuple(ignored))
    if export.state is S.DELIVERED and now >= export.entered_at + timers.ack_timeout:
        return Due(Action.RECORD, ExportEvent.TIMED_OUT, ignored=tuple(ignored))
    if export.state is S.TIMED_OUT:
        return Due(Action.REDELIVER, ExportEvent.REDELIVERED, ignored=tuple(ignored))
    return Due.nothing(ignored)


def ack_answer(name: str, data: bytes, sha256: str) -> RegulatorAnswer:
    """An ACK document (`cdr-mediation.regulator-ack.v1`, JSON with the acknowledged `sha256`).

    ValueError if it is not one: an unreadable answer is never taken for an acceptance.
    """
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise ValueError(f"{name}: ACK is not JSON ({exc})") from None
    if not isinstance(document, dict) or not isinstance(document.get("sha256"), str):
        raise ValueError(f"{name}: ACK names no acknowledged sha256")
    return RegulatorAnswer(name, AnswerKind.ACK, sha256, acknowledged_sha256=document["sha256"], data=data)


def rap_reasons(rap: Any) -> dict[str, Any]:
    """What a decoded RAP file says, as plain JSON for the REJECTED step: per return, its kind,
    the TAP file sequence number it concerns and the TD.32 error codes."""
    from cdr_mediation.codecs import rap as rap_model

    if isinstance(rap, rap_model.Acknowledgement):
        return {"rap_file_sequence_number": rap.rap_file_sequence_number, "kind": "acknowledgement", "returns": []}
    returns = []
    for item in rap.returns:
        entry: dict[str, Any] = {"kind": type(item).__name__}
        if hasattr(item, "file_sequence_number"):
            entry["file_sequence_number"] = item.file_sequence_number
        codes: list[int] = []
        if isinstance(item, rap_model.FatalReturn):
            groups = [item.transfer_batch_error or ()]
            groups += [group.error_details for group in (
                item.notification_error, item.batch_control_error, item.accounting_info_error,
                item.network_info_error, item.message_description_error, item.audit_control_info_error)
                if group is not None]
            codes = [detail.error_code for details in groups for detail in details]
        elif isinstance(item, rap_model.SevereReturn):
            codes = [detail.error_code for detail in item.error_details]
        entry["error_codes"] = codes
        if getattr(item, "operator_spec", None):
            entry["operator_spec"] = list(item.operator_spec)
        returns.append(entry)
    return {"rap_file_sequence_number": rap.control.rap_file_sequence_number,
            "sender": rap.control.sender, "recipient": rap.control.recipient, "kind": "return_batch",
            "returns": returns}
