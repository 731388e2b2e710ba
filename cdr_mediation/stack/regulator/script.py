"""What the simulated regulator decides, as a test commands it: no I/O here.

A test steers the simulator with answer rules ("reject CDAFGAW* with TD.32 codes 34 and 100",
"say nothing to silent-*"); the most recently added matching rule decides how a newly received
file is answered, else the default rule (ACK). Whether a delivery is a new file, the same file
again, or other bytes under a known name is decided here too, so both channels and the drop-box
watcher apply one rule.
"""

from __future__ import annotations

import dataclasses
import enum
import fnmatch
import re
from collections.abc import Mapping
from typing import Any

from cdr_mediation.infra.delivery.files import TapFileName

# The parties of a RAP return when the returned file's name is not a TD.57 name saying who sent
# it to whom.
REGULATOR_TADIG = "AFGRA"
OPERATOR_TADIG = "AFGAW"
_TADIG = re.compile(r"[A-Z]{3}[A-Z0-9]{2}")


class Answer(str, enum.Enum):
    ACK = "ack"  # accept: NAME.ack
    REJECT = "reject"  # return the whole file: NAME.rap, a RAP 1.05 FatalReturn
    NONE = "none"  # say nothing: the exporter must time out


class AnswerError(ValueError):
    """The commanded answer cannot be given for this file (recorded on its receipt)."""


@dataclasses.dataclass(frozen=True)
class AnswerRule:
    """How to answer files whose name matches `pattern` (an exact name or a shell-style glob)."""

    pattern: str
    answer: Answer
    errors: tuple[int, ...] = ()  # TD.32 error codes of a rejection
    # A rejection names the returned file by its TAP file sequence number, and its sender and
    # recipient by TADIG code; for a TD.57 name these come from the name, otherwise from here
    # (or the simulator's default parties).
    file_sequence_number: int | None = None
    sender: str | None = None  # of the RAP file: the regulator
    recipient: str | None = None  # of the RAP file: the operator that sent the TAP file

    KEYS = frozenset({"file", "answer", "errors", "file_sequence_number", "sender", "recipient"})

    @classmethod
    def from_json(cls, value: Mapping[str, Any], *, extra_keys: frozenset[str] = frozenset()) -> "AnswerRule":
        """Parse a control command; ValueError says what is wrong with it.

        `extra_keys` are keys of the command that are not part of the rule (e.g. the control
        API's `apply_to_received`): tolerated here, read by the caller.
        """
        if not isinstance(value, Mapping):
            raise ValueError("an answer rule is a JSON object")
        unknown = sorted(set(value) - cls.KEYS - extra_keys)
        if unknown:
            raise ValueError(f"unknown keys {unknown}; known: {sorted(cls.KEYS | extra_keys)}")
        pattern = value.get("file", "*")
        if not isinstance(pattern, str) or not pattern:
            raise ValueError("'file' must be a file name or a glob pattern")
        try:
            answer = Answer(value.get("answer"))
        except ValueError:
            raise ValueError(f"'answer' must be one of {[a.value for a in Answer]}") from None
        errors = value.get("errors", [])
        if not isinstance(errors, list) or not all(isinstance(e, int) and not isinstance(e, bool) and e >= 0
                                                   for e in errors):
            raise ValueError("'errors' must be a list of TD.32 error codes (integers >= 0)")
        if answer is Answer.REJECT and not errors:
            raise ValueError("a rejection carries at least one error code in 'errors'")
        if answer is not Answer.REJECT and errors:
            raise ValueError("'errors' only go with answer 'reject'")
        sequence = value.get("file_sequence_number")
        if sequence is not None and (isinstance(sequence, bool) or not isinstance(sequence, int)
                                     or not 1 <= sequence <= 99999):
            raise ValueError("'file_sequence_number' must be 1..99999")
        for party in ("sender", "recipient"):
            code = value.get(party)
            if code is not None and (not isinstance(code, str) or not _TADIG.fullmatch(code)):
                raise ValueError(f"'{party}' must be a TADIG code (3 letters A-Z then 2 letters or digits)")
        return cls(pattern, answer, tuple(errors), sequence, value.get("sender"), value.get("recipient"))

    def matches(self, file_name: str) -> bool:
        return fnmatch.fnmatchcase(file_name, self.pattern)

    def as_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {"file": self.pattern, "answer": self.answer.value, "errors": list(self.errors)}
        for key in ("file_sequence_number", "sender", "recipient"):
            if getattr(self, key) is not None:
                result[key] = getattr(self, key)
        return result


DEFAULT_RULE = AnswerRule("*", Answer.ACK)


@dataclasses.dataclass(frozen=True)
class AnswerBook:
    """The commanded answers: the most recently added matching rule wins, else the default."""

    default: AnswerRule = DEFAULT_RULE
    rules: tuple[AnswerRule, ...] = ()

    def rule_for(self, file_name: str) -> AnswerRule:
        for rule in reversed(self.rules):
            if rule.matches(file_name):
                return rule
        return self.default

    def with_rule(self, rule: AnswerRule) -> "AnswerBook":
        return dataclasses.replace(self, rules=(*self.rules, rule))

    def with_default(self, rule: AnswerRule) -> "AnswerBook":
        return dataclasses.replace(self, default=dataclasses.replace(rule, pattern="*"))

    def cleared(self) -> "AnswerBook":
        return dataclasses.replace(self, rules=())

    def as_json(self) -> dict[str, Any]:
        return {"default": self.default.as_json(), "rules": [r.as_json() for r in self.rules]}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> "AnswerBook":
        return cls(AnswerRule.from_json(value.get("default", DEFAULT_RULE.as_json())),
                   tuple(AnswerRule.from_json(r) for r in value.get("rules", [])))


@dataclasses.dataclass(frozen=True)
class RejectionTerms:
    """Who returns which TAP file to whom in a RAP FatalReturn, and why (TD.32 codes)."""

    file_sequence_number: int
    sender: str
    recipient: str
    errors: tuple[int, ...]
    test_data: bool


def rejection_terms(rule: AnswerRule, file_name: str) -> RejectionTerms:
    """The terms of rejecting `file_name` under `rule`; AnswerError if the rule cannot apply."""
    if rule.answer is not Answer.REJECT:
        raise AnswerError(f"rule for {rule.pattern!r} answers {rule.answer.value!r}, not 'reject'")
    tap_name = TapFileName.parse(file_name)
    sequence = rule.file_sequence_number or (tap_name.file_sequence_number if tap_name else None)
    if sequence is None:
        raise AnswerError(f"{file_name} is not a TD.57 file name: the rule must give 'file_sequence_number'")
    # The regulator received the TAP file, so it is the RAP file's sender and the operator its recipient.
    sender = rule.sender or (tap_name.recipient if tap_name else REGULATOR_TADIG)
    recipient = rule.recipient or (tap_name.sender if tap_name else OPERATOR_TADIG)
    return RejectionTerms(sequence, sender, recipient, rule.errors, bool(tap_name and tap_name.test_data))


class Arrival(enum.Enum):
    """What a delivered file is to the regulator, by name and SHA-256."""

    NEW = "new"  # a name it did not hold: one new receipt
    REDELIVERY = "redelivery"  # the same bytes under a name it holds: counted, never a second receipt
    CONFLICT = "conflict"  # other bytes under a name it holds: refused, the held file stays


def classify_arrival(held_sha256: str | None, sha256: str) -> Arrival:
    """`held_sha256` is the digest of the file the regulator holds under the name, if any."""
    if held_sha256 is None:
        return Arrival.NEW
    return Arrival.REDELIVERY if held_sha256 == sha256 else Arrival.CONFLICT
