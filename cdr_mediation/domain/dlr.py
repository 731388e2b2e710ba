"""DLR v1: the delivery receipt dlr-processor publishes, and its strict parser.

The published contract is ``schemas/dlr.v1.schema.json`` (JSON Schema 2020-12). `parse_dlr`
enforces the same rules without a schema engine (it runs on the hot path), plus the few rules
JSON Schema cannot express; tests/unit/domain/test_dlr.py holds both to one corpus.

Rules (all of them; anything not listed is rejected):

* The payload is at most `MAX_DLR_BYTES` bytes of UTF-8 JSON (RFC 8259) whose top level is an
  object. Duplicate member names are rejected at any depth (parsers disagree on which one wins,
  so accepting them would make the CDR depend on the parser). NaN/Infinity are rejected.
* ``schema_version`` is the integer 1. It is checked first, so a v2 message is reported as
  `unsupported_schema_version`, not as a list of unknown fields.
* Every v1 field is required; only ``error_code`` may be ``null``.
* **Unknown fields:** a top-level key matching ``^x_[A-Za-z0-9_]{1,62}$`` is an extension: it is
  accepted, its value is not inspected, and it is dropped — it never reaches the CDR, the dedup
  fingerprint or any hash. Any other unknown key is rejected (`unknown_field`). Why: a typo
  (``msisnd``) or a field from a newer contract arriving at a v1 consumer must not be silently
  ignored, because the CDR is evidence; the ``x_`` namespace still lets upstream attach
  diagnostics (trace ids, SMSC raw text) without a contract change.
* Identifiers are ASCII from a small alphabet (they become Kafka keys, NATS subject tokens,
  file names and TAP fields): ``operator_id`` and ``tenant_id`` ``[A-Za-z0-9_-]{1,64}`` (no ``.``:
  the operator is a NATS subject token), ``smsc_id`` ``[A-Za-z0-9._:-]{1,64}``, ``dlr_id`` and
  ``message_id`` ``[A-Za-z0-9._:-]{1,128}``. ``dlr_id`` must be globally unique: the CDR id is
  derived from it alone.
* ``msisdn`` is E.164: ``+``, a non-zero digit, 8–15 digits in all.
* ``sender_id`` is printable ASCII, 1–16 characters, no leading or trailing space (alphanumeric
  sender, short code or E.164 number).
* ``status`` is one of `DlrStatus`.
* ``submitted_at`` / ``done_at`` are RFC 3339 date-times with an explicit offset (``Z`` or
  ``±hh:mm``; naive times are rejected), upper-case ``T``/``Z``, 0–9 fraction digits, no leap
  second. They are normalised to UTC and **truncated to milliseconds** — the precision of the CDR
  (`format_utc`), so pricing and the CDR see the same instant.
* ``done_at`` may precede ``submitted_at`` by at most `CLOCK_SKEW_TOLERANCE` (60 s): SMPP delivery
  receipts carry the done date to the minute (SMPP 3.4 Appendix B), so a done_at truncated to its
  minute can legitimately read up to 59.999 s before a submitted_at stamped by our own clock.
  Values are recorded as received, never adjusted.
* ``segments`` is an integer literal 1..255 (the concatenated-SMS limit); ``2.0`` is rejected.
* ``error_code`` is ``null`` or ``[A-Za-z0-9._:-]{1,32}``.

Every rejection is one `InvalidDlr(reason_code, detail)`. `reason_code` is a `DlrReason` value —
a small, stable set used as the dead-letter reason and as a metric label; `detail` is for humans
(it names the field, never echoes an msisdn). Checks run in a fixed order, so the same bytes
always yield the same reason.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import operator
import re
from typing import Any

import orjson

from cdr_mediation.codecs.canonical_json import canonical_bytes
from cdr_mediation.domain.cdr import DlrStatus, format_utc
from cdr_mediation.domain.strict_json import StrictJsonError, loads_strict

SCHEMA_VERSION = 1
MAX_DLR_BYTES = 8192
CLOCK_SKEW_TOLERANCE = dt.timedelta(seconds=60)
MAX_SEGMENTS = 255

# Patterns are written once and shared with the JSON Schema file (a test compares them).
# They are matched with re.fullmatch and use [0-9], never \d (which matches any Unicode digit).
PATTERNS: dict[str, str] = {
    "dlr_id": r"[A-Za-z0-9._:-]{1,128}",
    "message_id": r"[A-Za-z0-9._:-]{1,128}",
    "tenant_id": r"[A-Za-z0-9_-]{1,64}",
    "operator_id": r"[A-Za-z0-9_-]{1,64}",
    "sender_id": r"[!-~](?:[ -~]{0,14}[!-~])?",
    "msisdn": r"\+[1-9][0-9]{7,14}",
    "smsc_id": r"[A-Za-z0-9._:-]{1,64}",
    "error_code": r"[A-Za-z0-9._:-]{1,32}",
    # RFC 3339 date-time with offset; the groups are what parse_rfc3339 reads.
    "timestamp": (
        r"([0-9]{4})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
        r"T([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9])(?:\.([0-9]{1,9}))?"
        r"(Z|([+-])([01][0-9]|2[0-3]):([0-5][0-9]))"
    ),
    "extension_key": r"x_[A-Za-z0-9_]{1,62}",
}

_RE = {name: re.compile(pattern) for name, pattern in PATTERNS.items()}
_UTC = dt.timezone.utc


class DlrReason(str, enum.Enum):
    """Why a DLR was rejected. Values are stable: they are DLQ reasons and metric labels."""

    TOO_LARGE = "too_large"
    INVALID_ENCODING = "invalid_encoding"
    INVALID_JSON = "invalid_json"
    DUPLICATE_KEY = "duplicate_key"
    NOT_AN_OBJECT = "not_an_object"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    UNKNOWN_FIELD = "unknown_field"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    INVALID_ID = "invalid_id"
    INVALID_SENDER_ID = "invalid_sender_id"
    INVALID_MSISDN = "invalid_msisdn"
    INVALID_STATUS = "invalid_status"
    INVALID_TIMESTAMP = "invalid_timestamp"
    DONE_BEFORE_SUBMITTED = "done_before_submitted"
    SEGMENTS_OUT_OF_RANGE = "segments_out_of_range"
    INVALID_ERROR_CODE = "invalid_error_code"


class InvalidDlr(ValueError):
    """The one error `parse_dlr` raises. `reason_code` is a `DlrReason` value (a plain str)."""

    def __init__(self, reason_code: DlrReason | str, detail: str) -> None:
        self.reason_code = DlrReason(reason_code).value
        self.detail = detail
        super().__init__(f"{self.reason_code}: {detail}")


@dataclasses.dataclass(frozen=True, slots=True)
class Dlr:
    """A validated DLR v1. Timestamps are aware UTC datetimes, truncated to milliseconds."""

    dlr_id: str
    message_id: str
    tenant_id: str
    operator_id: str
    sender_id: str
    msisdn: str
    status: DlrStatus
    submitted_at: dt.datetime
    done_at: dt.datetime
    segments: int
    error_code: str | None
    smsc_id: str
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The normalised v1 JSON object (UTC ``Z`` timestamps, no extensions).

        `parse_dlr(orjson.dumps(dlr.to_dict()))` returns an equal `Dlr`.
        """
        return {
            "schema_version": self.schema_version,
            "dlr_id": self.dlr_id,
            "message_id": self.message_id,
            "tenant_id": self.tenant_id,
            "operator_id": self.operator_id,
            "sender_id": self.sender_id,
            "msisdn": self.msisdn,
            "status": self.status.value,
            "submitted_at": format_utc(self.submitted_at),
            "done_at": format_utc(self.done_at),
            "segments": self.segments,
            "error_code": self.error_code,
            "smsc_id": self.smsc_id,
        }

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the RFC 8785 bytes of `to_dict()`.

        Two deliveries with the same `dlr_id` are the same receipt iff their fingerprints are
        equal; whitespace, key order, timestamp offsets and ``x_`` extensions do not matter.
        """
        return hashlib.sha256(canonical_bytes(self.to_dict())).hexdigest()


# Field order = check order (deterministic reasons) = order in the schema's "required".
FIELDS: tuple[str, ...] = (
    "schema_version",
    "dlr_id",
    "message_id",
    "tenant_id",
    "operator_id",
    "sender_id",
    "msisdn",
    "status",
    "submitted_at",
    "done_at",
    "segments",
    "error_code",
    "smsc_id",
)
_FIELD_SET = frozenset(FIELDS)
_STATUSES = {status.value: status for status in DlrStatus}


def _string(obj: dict[str, Any], field: str) -> str:
    value = obj[field]
    if type(value) is not str:
        raise InvalidDlr(DlrReason.WRONG_TYPE, f"{field} must be a string")
    return value


def _id(obj: dict[str, Any], field: str) -> str:
    value = _string(obj, field)
    if _RE[field].fullmatch(value) is None:
        raise InvalidDlr(DlrReason.INVALID_ID, f"{field} does not match {PATTERNS[field]}")
    return value


def parse_rfc3339(text: str) -> dt.datetime:
    """RFC 3339 date-time with an explicit offset -> aware UTC datetime truncated to ms.

    Raises ValueError. Shared with the pricing snapshot so both read time the same way.
    """
    match = _RE["timestamp"].fullmatch(text)
    if match is None:
        raise ValueError("not an RFC 3339 date-time with Z or ±hh:mm offset")
    return _utc_from_groups(match.groups())


def _utc_from_groups(groups) -> dt.datetime:
    """The instant of the 11 groups of `PATTERNS["timestamp"]` (ValueError if not a date)."""
    year, month, day, hour, minute, second, fraction, zone, sign, off_h, off_m = groups
    millis = int((fraction or "0")[:3].ljust(3, "0"))  # truncate, never round (see format_utc)
    try:
        if zone == "Z":
            # Already UTC (the usual case): no conversion, so no second datetime to build.
            return dt.datetime(
                int(year), int(month), int(day), int(hour), int(minute), int(second),
                millis * 1000, tzinfo=_UTC,
            )
        delta = dt.timedelta(hours=int(off_h), minutes=int(off_m))
        offset = dt.timezone(-delta if sign == "-" else delta)
        local = dt.datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second),
            millis * 1000, tzinfo=offset,
        )
        return local.astimezone(_UTC)
    except (ValueError, OverflowError):
        raise ValueError("not a valid calendar date-time") from None


def _timestamp(obj: dict[str, Any], field: str) -> dt.datetime:
    try:
        return parse_rfc3339(_string(obj, field))
    except InvalidDlr:
        raise
    except ValueError as exc:
        raise InvalidDlr(DlrReason.INVALID_TIMESTAMP, f"{field} is {exc}") from None


# The end of a member name: its closing quote, JSON whitespace, the colon. Every member of every
# object in a JSON text ends this way, so the number of matches is at least the number of
# members written (string contents can only add matches, never hide one).
_MEMBER_END = re.compile(rb'"[ \t\n\r]*:')
_FLAT_TYPES = frozenset({str, int, bool, type(None)})


def _loads(raw: bytes) -> Any:
    """`loads_strict(raw)`, several times faster for the usual DLR (a flat object).

    orjson does the parsing when its result provably equals the strict reader's: the text is a
    flat object (values are strings, integers, booleans or null — no nesting, no floats, since
    orjson reads integers beyond 64 bits as floats where the stdlib keeps them exact), and no
    member name occurs twice. orjson keeps the last of duplicate members, so that is checked
    on the text: it holds when the object's member count equals the `_MEMBER_END` count
    (which is >= the members written >= the members kept). Anything else — errors, nesting,
    floats, possible duplicates — goes to `loads_strict`, which reports exactly what it did
    before. tests/unit/domain/test_hot_path.py compares both readers on generated texts.
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return loads_strict(raw)
    if (
        type(obj) is dict
        and _FLAT_TYPES.issuperset(map(type, obj.values()))
        and len(_MEMBER_END.findall(raw)) == len(obj)
    ):
        return obj
    return loads_strict(raw)


def parse_dlr(raw: bytes) -> Dlr:
    """Validate one DLR v1 message; raise `InvalidDlr` with a stable reason otherwise."""
    if len(raw) > MAX_DLR_BYTES:
        raise InvalidDlr(DlrReason.TOO_LARGE, f"{len(raw)} bytes > {MAX_DLR_BYTES}")
    try:
        obj = _loads(raw)
    except StrictJsonError as exc:
        raise InvalidDlr(exc.kind, exc.detail) from None
    if type(obj) is dict and obj.keys() == _FIELD_SET:
        dlr = _accept_plain(obj)
        if dlr is not None:
            return dlr
    return _check_in_order(obj)


# The fast acceptance path: every check of `_check_in_order`, done in bulk. It only accepts — and
# then builds the very Dlr the sequential checks would — and hands anything else to them, so
# reasons and details keep their order. The string fields are matched by one regex over the
# values joined with NUL: no field pattern matches NUL, so the joined text matches iff each value
# matches its own pattern (a NUL inside a value would add one more NUL than the regex allows).
_PLAIN_STRING_FIELDS = ("dlr_id", "message_id", "tenant_id", "operator_id", "sender_id", "msisdn", "status",
                        "submitted_at", "done_at", "smsc_id")
_plain_strings = operator.itemgetter(*_PLAIN_STRING_FIELDS)
_PLAIN_RE = re.compile("\x00".join(
    PATTERNS["timestamp"] if name in ("submitted_at", "done_at")
    else "(?:" + "|".join(re.escape(status.value) for status in DlrStatus) + ")" if name == "status"
    else f"(?:{PATTERNS[name]})"
    for name in _PLAIN_STRING_FIELDS
))


def _accept_plain(obj: dict[str, Any]) -> Dlr | None:
    """The Dlr of a valid v1 object without extensions, or None (then the caller checks in order)."""
    version, segments, error_code = obj["schema_version"], obj["segments"], obj["error_code"]
    if type(version) is not int or version != SCHEMA_VERSION:
        return None
    if type(segments) is not int or not 1 <= segments <= MAX_SEGMENTS:
        return None
    if error_code is not None and (type(error_code) is not str or _RE["error_code"].fullmatch(error_code) is None):
        return None
    values = _plain_strings(obj)
    try:
        match = _PLAIN_RE.fullmatch("\x00".join(values))
    except TypeError:  # a value is not a string
        return None
    if match is None:
        return None
    groups = match.groups()
    try:
        submitted_at = _plain_utc(values[7], groups[:11])
        done_at = _plain_utc(values[8], groups[11:])
    except ValueError:
        return None
    if done_at < submitted_at - CLOCK_SKEW_TOLERANCE:
        return None
    dlr_id, message_id, tenant_id, operator_id, sender_id, msisdn, status, _, _, smsc_id = values
    return Dlr(
        dlr_id=dlr_id,
        message_id=message_id,
        tenant_id=tenant_id,
        operator_id=operator_id,
        sender_id=sender_id,
        msisdn=msisdn,
        status=_STATUSES[status],
        submitted_at=submitted_at,
        done_at=done_at,
        segments=segments,
        error_code=error_code,
        smsc_id=smsc_id,
    )


def _plain_utc(text: str, groups) -> dt.datetime:
    """The instant of a timestamp that matched `PATTERNS["timestamp"]`. 24 characters can only
    be the canonical ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (the usual form), which `fromisoformat` reads
    in one C call into the same UTC datetime that `_utc_from_groups` builds."""
    if len(text) == 24:
        return dt.datetime.fromisoformat(text)
    return _utc_from_groups(groups)


def _check_in_order(obj: Any) -> Dlr:
    """Every rule, one after the other in the documented order: the first failure is reported."""
    if type(obj) is not dict:
        raise InvalidDlr(DlrReason.NOT_AN_OBJECT, "top-level JSON value must be an object")

    if "schema_version" not in obj:
        raise InvalidDlr(DlrReason.MISSING_FIELD, "schema_version is required")
    version = obj["schema_version"]
    if type(version) is not int or version != SCHEMA_VERSION:
        raise InvalidDlr(
            DlrReason.UNSUPPORTED_SCHEMA_VERSION,
            f"schema_version must be the integer {SCHEMA_VERSION}",
        )

    if len(obj) != len(FIELDS) or not _FIELD_SET.issuperset(obj):
        unknown = sorted(
            key for key in obj
            if key not in _FIELD_SET and _RE["extension_key"].fullmatch(key) is None
        )
        if unknown:
            raise InvalidDlr(DlrReason.UNKNOWN_FIELD, f"unknown field {unknown[0][:70]!r}")
    for field in FIELDS:
        if field not in obj:
            raise InvalidDlr(DlrReason.MISSING_FIELD, f"{field} is required")

    dlr_id = _id(obj, "dlr_id")
    message_id = _id(obj, "message_id")
    tenant_id = _id(obj, "tenant_id")
    operator_id = _id(obj, "operator_id")

    sender_id = _string(obj, "sender_id")
    if _RE["sender_id"].fullmatch(sender_id) is None:
        raise InvalidDlr(
            DlrReason.INVALID_SENDER_ID,
            "sender_id must be 1-16 printable ASCII characters without surrounding spaces",
        )

    msisdn = _string(obj, "msisdn")
    if _RE["msisdn"].fullmatch(msisdn) is None:
        # Never echo the value: an msisdn is personal data and details end up in logs.
        raise InvalidDlr(DlrReason.INVALID_MSISDN, "msisdn must be E.164: '+' and 8-15 digits")

    status_text = _string(obj, "status")
    status = _STATUSES.get(status_text)
    if status is None:
        raise InvalidDlr(
            DlrReason.INVALID_STATUS, f"status must be one of {', '.join(_STATUSES)}"
        )

    submitted_at = _timestamp(obj, "submitted_at")
    done_at = _timestamp(obj, "done_at")
    if done_at < submitted_at - CLOCK_SKEW_TOLERANCE:
        raise InvalidDlr(
            DlrReason.DONE_BEFORE_SUBMITTED,
            f"done_at is more than {CLOCK_SKEW_TOLERANCE.total_seconds():.0f} s "
            "before submitted_at",
        )

    segments = obj["segments"]
    if type(segments) is not int:
        raise InvalidDlr(DlrReason.WRONG_TYPE, "segments must be an integer literal")
    if not 1 <= segments <= MAX_SEGMENTS:
        raise InvalidDlr(DlrReason.SEGMENTS_OUT_OF_RANGE, f"segments must be 1..{MAX_SEGMENTS}")

    error_code = obj["error_code"]
    if error_code is not None:
        if type(error_code) is not str:
            raise InvalidDlr(DlrReason.WRONG_TYPE, "error_code must be a string or null")
        if _RE["error_code"].fullmatch(error_code) is None:
            raise InvalidDlr(
                DlrReason.INVALID_ERROR_CODE, f"error_code does not match {PATTERNS['error_code']}"
            )

    smsc_id = _id(obj, "smsc_id")

    return Dlr(
        dlr_id=dlr_id,
        message_id=message_id,
        tenant_id=tenant_id,
        operator_id=operator_id,
        sender_id=sender_id,
        msisdn=msisdn,
        status=status,
        submitted_at=submitted_at,
        done_at=done_at,
        segments=segments,
        error_code=error_code,
        smsc_id=smsc_id,
    )
