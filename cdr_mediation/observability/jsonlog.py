"""JSON logs on stderr: one object per line, MSISDNs replaced by keyed references.

Redaction is a last line of defence, applied to the rendered message and to every string field:
code should log `hasher.reference(msisdn)` on purpose, but a number that slips into a message
(an exception text quoting a DLR, say) is still replaced. Integer fields (offsets, counts) are
left alone, so keep identifiers that could be phone numbers out of integer fields.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

from cdr_mediation.observability.msisdn import MsisdnHasher

_FIELDS = "%(levelname)s %(name)s %(message)s"


class RedactingJsonFormatter(JsonFormatter):
    def __init__(self, hasher: MsisdnHasher, service: str) -> None:
        super().__init__(_FIELDS, rename_fields={"levelname": "level", "name": "logger"},
                         static_fields={"service": service}, timestamp="ts")
        self._hasher = hasher

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        # A line logged inside a span names it, so logs and traces join on trace_id.
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            log_data.setdefault("trace_id", f"{span_context.trace_id:032x}")
            log_data.setdefault("span_id", f"{span_context.span_id:016x}")
        return {key: self._redact(value) for key, value in log_data.items()}

    def _redact(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._hasher.redact(value)
        if isinstance(value, dict):
            return {k: self._redact(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._redact(v) for v in value]
        return value


def configure_logging(*, service: str, level: str, hasher: MsisdnHasher, stream=None) -> None:
    """Route every logger (ours, Faust's, aiokafka's) through one redacting JSON handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(RedactingJsonFormatter(hasher, service))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # Chatty third-party loggers that would drown the signal at INFO.
    for noisy in ("aiokafka", "werkzeug", "botocore", "asyncssh"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
