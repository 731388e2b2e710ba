import io
import json
import logging

import pytest

from cdr_mediation.observability.jsonlog import configure_logging
from cdr_mediation.observability.msisdn import MsisdnHasher

KEY = b"k" * 32


def test_reference_is_stable_and_hides_the_number():
    hasher = MsisdnHasher(KEY)
    reference = hasher.reference("+447700900123")
    assert reference == hasher.reference("447700900123")  # the '+' does not change identity
    assert "447700900123" not in reference and reference.startswith("msisdn:")


def test_reference_depends_on_the_key():
    # A keyless hash of a 12-digit number is reversible by enumeration; a keyed one is not.
    assert MsisdnHasher(KEY).reference("+447700900123") != MsisdnHasher(b"z" * 32).reference("+447700900123")


def test_short_keys_are_refused():
    with pytest.raises(ValueError):
        MsisdnHasher(b"short")


@pytest.mark.parametrize(
    "text",
    ["dlr for +447700900123 failed", "msisdn=33612345678;", "raw {\"msisdn\": \"+15551234567\"}"],
)
def test_redact_replaces_msisdns_in_free_text(text):
    redacted = MsisdnHasher(KEY).redact(text)
    assert not any(number in redacted for number in ("447700900123", "33612345678", "15551234567"))
    assert "msisdn:" in redacted


@pytest.mark.parametrize(
    "text",
    [
        "hash 5fc0ca8bc068a7fc07c05a4ba0e81e2597607cba3739ca327d42e54bec1ea4e64",
        "cdr 9bf4e281-a7a6-5afc-a3de-d295fb1fe781 dlr-1-000000000042",
        "Timer commit is overlapping (interval=2.8 runtime=4.884623619)",
        "lag 1732240000.123456789 s",
    ],
)
def test_redact_leaves_hashes_ids_and_fractions_intact(text):
    assert MsisdnHasher(KEY).redact(text) == text


def test_redact_still_catches_a_number_at_the_end_of_a_sentence():
    assert "447700900123" not in MsisdnHasher(KEY).redact("call +447700900123.")


def test_redact_leaves_short_numbers_alone():
    assert MsisdnHasher(KEY).redact("partition 7 offset 1234567 seq 42") == "partition 7 offset 1234567 seq 42"


def _log_lines(emit) -> list[dict]:
    stream = io.StringIO()
    configure_logging(service="test", level="INFO", hasher=MsisdnHasher(KEY), stream=stream)
    emit(logging.getLogger("cdr_mediation.test"))
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_log_lines_are_json_without_clear_msisdns():
    lines = _log_lines(lambda log: log.warning("rejected +447700900123", extra={"msisdn": "+447700900123",
                                                                               "detail": {"to": "447700900123"}}))
    assert len(lines) == 1
    assert lines[0]["level"] == "WARNING" and lines[0]["service"] == "test"
    assert "447700900123" not in json.dumps(lines[0])
    assert lines[0]["msisdn"] == MsisdnHasher(KEY).reference("+447700900123")


def test_tracebacks_are_redacted_too():
    def emit(log):
        try:
            raise ValueError("bad number 447700900999")
        except ValueError:
            log.exception("parse failed")

    line = _log_lines(emit)[0]
    assert "ValueError" in line["exc_info"] and "447700900999" not in json.dumps(line)


def test_integer_fields_are_not_rewritten():
    assert _log_lines(lambda log: log.info("committed", extra={"offset": 123456789012}))[0]["offset"] == 123456789012
