"""What is due for a delivered export: answers first, then the deadline, then the ACK time-out."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest

from cdr_mediation.codecs.rap import (
    DateTimeLong,
    ErrorDetail,
    FatalReturn,
    RapBatchControl,
    decode_rap,
    encode_rap,
    return_batch,
)
from cdr_mediation.domain.export_followup import (
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

S, E = ExportState, ExportEvent
CLOSED = dt.datetime(2026, 10, 21, 2, 1, tzinfo=dt.timezone.utc)
TIMERS = FollowUpTimers(ack_timeout=dt.timedelta(hours=6), deadline=dt.timedelta(hours=48))
DELIVERED_SHA = "d" * 64


def export(state: ExportState = S.DELIVERED, *, entered_after: dt.timedelta = dt.timedelta(hours=1),
           seen: frozenset[str] = frozenset()) -> OpenExport:
    return OpenExport("op-a", "2026-10-20", "TDAFGAWATRAA00001", state, CLOSED, CLOSED + entered_after,
                      DELIVERED_SHA, seen)


def ack(acknowledged: str = DELIVERED_SHA, sha256: str = "a" * 64) -> RegulatorAnswer:
    return RegulatorAnswer("TDAFGAWATRAA00001.zip.ack", AnswerKind.ACK, sha256, acknowledged_sha256=acknowledged)


def rap(sha256: str = "r" * 64) -> RegulatorAnswer:
    return RegulatorAnswer("TDAFGAWATRAA00001.zip.rap", AnswerKind.RAP, sha256, reasons={"returns": []})


def at(hours: float) -> dt.datetime:
    return CLOSED + dt.timedelta(hours=hours)


def test_an_ack_of_the_delivered_bytes_is_recorded_as_acked():
    decision = due(export(), [ack()], now=at(2), timers=TIMERS)
    assert (decision.action, decision.event, decision.answer) == (Action.RECORD, E.ACKED, ack())


def test_an_ack_of_other_bytes_is_never_an_acceptance_and_is_reported():
    other = ack(acknowledged="e" * 64)
    decision = due(export(), [other], now=at(2), timers=TIMERS)
    assert decision.action is Action.NOTHING and decision.ignored == (other,)


def test_a_rap_return_rejects_and_wins_over_an_ack_of_the_same_file():
    decision = due(export(), [ack(), rap()], now=at(2), timers=TIMERS)
    assert (decision.event, decision.answer) == (E.REJECTED, rap())


def test_an_answer_already_recorded_does_not_count_again():
    # The old .rap of a rejected file is still on the server when the corrected file is delivered.
    decision = due(export(seen=frozenset({rap().sha256})), [rap()], now=at(2), timers=TIMERS)
    assert decision.action is Action.NOTHING


@pytest.mark.parametrize("state", [S.TIMED_OUT, S.MANUAL])
def test_a_late_answer_still_counts(state):
    assert due(export(state), [ack()], now=at(100), timers=TIMERS).event is E.ACKED
    assert due(export(state), [rap()], now=at(100), timers=TIMERS).event is E.REJECTED


def test_answers_do_not_move_a_file_that_is_not_waiting_for_one():
    decision = due(export(S.REJECTED), [ack()], now=at(2), timers=TIMERS)
    assert decision.action is Action.NOTHING


def test_no_answer_within_the_time_out_is_a_time_out_and_not_before():
    delivered = export(entered_after=dt.timedelta(hours=1))
    assert due(delivered, [], now=at(6.99), timers=TIMERS).action is Action.NOTHING
    assert due(delivered, [], now=at(7), timers=TIMERS).event is E.TIMED_OUT


def test_a_timed_out_file_is_delivered_again():
    decision = due(export(S.TIMED_OUT), [], now=at(8), timers=TIMERS)
    assert (decision.action, decision.event) == (Action.REDELIVER, E.REDELIVERED)


@pytest.mark.parametrize("state", [S.PENDING, S.BUILT, S.SIGNED, S.DELIVERED, S.TIMED_OUT, S.REJECTED, S.REBUILT])
def test_past_the_deadline_every_unfinished_file_goes_to_manual(state):
    assert due(export(state), [], now=at(48), timers=TIMERS).event is E.DEADLINE_PASSED
    assert due(export(state), [], now=at(47.9), timers=TIMERS).event is not E.DEADLINE_PASSED


def test_manual_stays_with_the_person_until_the_regulator_answers():
    assert due(export(S.MANUAL), [], now=at(500), timers=TIMERS).action is Action.NOTHING


def test_the_deadline_runs_from_the_day_closing_not_from_the_last_delivery():
    redelivered_late = export(entered_after=dt.timedelta(hours=47))
    assert due(redelivered_late, [], now=at(48), timers=TIMERS).event is E.DEADLINE_PASSED


def test_timers_must_be_positive():
    with pytest.raises(ValueError):
        FollowUpTimers(dt.timedelta(0), dt.timedelta(hours=1))


def test_answers_that_concern_the_zip_are_named_after_it():
    assert zip_answer_names("TDAFGAWATRAA00001") == {"TDAFGAWATRAA00001.zip.ack": AnswerKind.ACK,
                                                     "TDAFGAWATRAA00001.zip.rap": AnswerKind.RAP}


def test_an_ack_document_names_what_it_acknowledges():
    data = json.dumps({"format": "cdr-mediation.regulator-ack.v1", "sha256": DELIVERED_SHA}).encode()
    answer = ack_answer("x.zip.ack", data, "a" * 64)
    assert (answer.kind, answer.acknowledged_sha256, answer.data) == (AnswerKind.ACK, DELIVERED_SHA, data)


@pytest.mark.parametrize("data", [b"not json", b"[]", b'{"sha256": 5}', b"{}"])
def test_an_unreadable_ack_is_refused_not_taken_for_an_acceptance(data):
    with pytest.raises(ValueError, match="x.zip.ack"):
        ack_answer("x.zip.ack", data, "a" * 64)


def test_rap_reasons_list_each_return_with_its_file_and_td32_codes():
    stamp = DateTimeLong.of(CLOSED, dt.timezone.utc)
    control = RapBatchControl("ATRAA", "AFGAW", 3, stamp, stamp)
    returned = FatalReturn(1, transfer_batch_error=(ErrorDetail(34), ErrorDetail(100)), operator_spec=("file=x",))
    reasons = rap_reasons(decode_rap(encode_rap(return_batch(control, (returned,)))))
    assert reasons == {"rap_file_sequence_number": 3, "sender": "ATRAA", "recipient": "AFGAW",
                       "kind": "return_batch",
                       "returns": [{"kind": "FatalReturn", "file_sequence_number": 1, "error_codes": [34, 100],
                                    "operator_spec": ["file=x"]}]}
    assert json.loads(json.dumps(reasons)) == reasons  # stored as JSON in the REJECTED step


def test_an_answer_keeps_its_bytes_out_of_its_repr():
    answer = dataclasses.replace(ack(), data=b"secret-ish bytes")
    assert "secret-ish" not in repr(answer)
