"""What the simulated regulator decides: the commanded answers and what a delivery is to it."""

from __future__ import annotations

import json
import re

import pytest

from cdr_mediation.stack.regulator.script import (
    OPERATOR_TADIG,
    REGULATOR_TADIG,
    Answer,
    AnswerBook,
    AnswerError,
    AnswerRule,
    Arrival,
    RejectionTerms,
    classify_arrival,
    rejection_terms,
)


def test_the_latest_matching_rule_wins_else_the_default():
    book = AnswerBook()
    assert book.rule_for("CDAFGAWAFGRA00001").answer is Answer.ACK  # the default
    book = book.with_rule(AnswerRule.from_json({"file": "CDAFGAW*", "answer": "none"}))
    book = book.with_rule(AnswerRule.from_json({"file": "CDAFGAWAFGRA00002", "answer": "reject", "errors": [34]}))
    assert book.rule_for("CDAFGAWAFGRA00001").answer is Answer.NONE
    assert book.rule_for("CDAFGAWAFGRA00002").errors == (34,)
    assert book.rule_for("CDAFGBBAFGRA00002").answer is Answer.ACK
    assert AnswerBook.from_json(json.loads(json.dumps(book.as_json()))) == book  # kept across restarts


def test_a_new_default_applies_to_every_name_and_clearing_keeps_it():
    book = AnswerBook().with_rule(AnswerRule.from_json({"file": "x*", "answer": "ack"}))
    book = book.with_default(AnswerRule.from_json({"file": "ignored", "answer": "none"}))
    assert book.default.pattern == "*" and book.rule_for("anything").answer is Answer.NONE
    assert book.cleared().rules == () and book.cleared().default == book.default


def test_glob_patterns_are_case_sensitive_like_td57_names():
    rule = AnswerRule.from_json({"file": "TD*", "answer": "none"})
    assert rule.matches("TDAFGAWAFGRA00001") and not rule.matches("tdafgawafgra00001")


@pytest.mark.parametrize(("command", "message"), [
    ({"file": "x", "answer": "maybe"}, "'answer' must be one of ['ack', 'reject', 'none']"),
    ({"file": "x", "answer": "reject"}, "a rejection carries at least one error code in 'errors'"),
    ({"file": "x", "answer": "ack", "errors": [1]}, "'errors' only go with answer 'reject'"),
    ({"file": "x", "answer": "reject", "errors": [-1]}, "'errors' must be a list of TD.32 error codes (integers >= 0)"),
    ({"file": "x", "answer": "reject", "errors": ["34"]}, "'errors' must be a list of TD.32 error codes"),
    ({"file": "x", "answer": "reject", "errors": [True]}, "'errors' must be a list of TD.32 error codes"),
    ({"file": "", "answer": "ack"}, "'file' must be a file name or a glob pattern"),
    ({"file": "x", "answer": "reject", "errors": [1], "file_sequence_number": 0},
     "'file_sequence_number' must be 1..99999"),
    ({"file": "x", "answer": "reject", "errors": [1], "file_sequence_number": True},
     "'file_sequence_number' must be 1..99999"),
    ({"file": "x", "answer": "reject", "errors": [1], "sender": "atra"}, "'sender' must be a TADIG code"),
    ({"file": "x", "answer": "ack", "colour": "red"}, "unknown keys ['colour']"),
    (["not", "an", "object"], "an answer rule is a JSON object"),
])
def test_bad_commands_are_refused_with_the_reason(command, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        AnswerRule.from_json(command)


def test_keys_of_the_command_that_are_not_rule_keys_are_accepted_only_when_expected():
    command = {"file": "x", "answer": "ack", "apply_to_received": True}
    with pytest.raises(ValueError, match="unknown keys"):
        AnswerRule.from_json(command)
    assert AnswerRule.from_json(command, extra_keys=frozenset({"apply_to_received"})).answer is Answer.ACK


def test_a_td57_file_is_returned_by_the_regulator_to_its_sender():
    rule = AnswerRule.from_json({"file": "*", "answer": "reject", "errors": [34, 100]})
    assert rejection_terms(rule, "TDAFGAWAFGRA00042") == RejectionTerms(
        file_sequence_number=42, sender="AFGRA", recipient="AFGAW", errors=(34, 100), test_data=True)
    assert not rejection_terms(rule, "CDAFGAWAFGRA00042").test_data


def test_a_file_without_a_td57_name_needs_its_sequence_number_from_the_rule():
    rule = AnswerRule.from_json({"file": "*", "answer": "reject", "errors": [1]})
    with pytest.raises(AnswerError, match="op-a.zip is not a TD.57 file name"):
        rejection_terms(rule, "op-a.zip")
    numbered = AnswerRule.from_json({"file": "*", "answer": "reject", "errors": [1], "file_sequence_number": 9})
    terms = rejection_terms(numbered, "op-a.zip")
    assert (terms.file_sequence_number, terms.sender, terms.recipient) == (9, REGULATOR_TADIG, OPERATOR_TADIG)


def test_the_rule_overrides_the_parties_named_by_the_file():
    rule = AnswerRule.from_json({"file": "*", "answer": "reject", "errors": [1], "file_sequence_number": 7,
                                 "sender": "AFGRX", "recipient": "AFGOP"})
    terms = rejection_terms(rule, "CDAFGAWAFGRA00042")
    assert (terms.file_sequence_number, terms.sender, terms.recipient) == (7, "AFGRX", "AFGOP")


def test_only_a_rejection_rule_has_rejection_terms():
    with pytest.raises(AnswerError, match="not 'reject'"):
        rejection_terms(AnswerRule.from_json({"answer": "ack"}), "CDAFGAWAFGRA00042")


def test_a_delivery_is_new_the_same_file_again_or_a_conflict():
    assert classify_arrival(None, "a" * 64) is Arrival.NEW
    assert classify_arrival("a" * 64, "a" * 64) is Arrival.REDELIVERY
    assert classify_arrival("a" * 64, "b" * 64) is Arrival.CONFLICT
