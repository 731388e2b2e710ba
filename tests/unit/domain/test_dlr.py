"""DLR v1 contract: the parser, and its agreement with the published JSON Schema."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdr_mediation.domain.cdr import DlrStatus
from cdr_mediation.domain.dlr import (
    FIELDS,
    MAX_DLR_BYTES,
    PATTERNS,
    Dlr,
    DlrReason,
    InvalidDlr,
    parse_dlr,
)
from cdr_mediation.domain.schemas import dlr_v1_schema

from .domain_samples import BASE_DLR, dlr_doc

UTC = dt.timezone.utc
DEEP = b": " + b"[" * 3000 + b"]" * 3000  # deeper than the decoder's recursion limit


def _python_regex(pattern: str) -> str:
    # JSON Schema patterns are ECMA-262, where `$` is the end of the string. The `jsonschema`
    # package runs them with Python's re.search, where `$` also matches before a final "\n".
    # Translating the anchor makes this validator behave as the spec (and ajv, Go, …) does.
    return pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern


def _to_python_regexes(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "pattern":
                out[key] = _python_regex(value)
            elif key == "patternProperties":
                out[key] = {_python_regex(k): _to_python_regexes(v) for k, v in value.items()}
            else:
                out[key] = _to_python_regexes(value)
        return out
    if isinstance(node, list):
        return [_to_python_regexes(item) for item in node]
    return node


SCHEMA = dlr_v1_schema()
jsonschema.Draft202012Validator.check_schema(SCHEMA)
VALIDATOR = jsonschema.Draft202012Validator(_to_python_regexes(SCHEMA))


def schema_accepts(doc: Any) -> bool:
    return VALIDATOR.is_valid(doc)


def parser_reason(doc: Any) -> str | None:
    try:
        parse_dlr(json.dumps(doc, ensure_ascii=False).encode())
    except InvalidDlr as exc:
        return exc.reason_code
    return None


# ---------------------------------------------------------------- the corpus ---------------

VALID: dict[str, dict[str, Any]] = {
    "base": dlr_doc(),
    "offset_positive": dlr_doc(submitted_at="2026-04-10T15:45:00+05:30",
                               done_at="2026-04-10T15:45:01+05:30"),
    "offset_negative": dlr_doc(submitted_at="2026-04-10T02:15:00-08:00",
                               done_at="2026-04-10T02:15:09.5-08:00"),
    "no_fraction": dlr_doc(done_at="2026-04-10T10:15:03Z"),
    "nine_fraction_digits": dlr_doc(done_at="2026-04-10T10:15:03.123456789Z"),
    "error_code_string": dlr_doc(status="UNDELIVERED", error_code="0x0000000B"),
    "segments_max": dlr_doc(segments=255),
    "msisdn_8_digits": dlr_doc(msisdn="+12345678"),
    "msisdn_15_digits": dlr_doc(msisdn="+123456789012345"),
    "sender_with_space": dlr_doc(sender_id="ACME Bank"),
    "sender_short_code": dlr_doc(sender_id="12345"),
    "sender_e164": dlr_doc(sender_id="+4915123456789"),
    "extension_members": dlr_doc(x_trace_id="abc", x_smsc_raw={"text": "id:1 stat:DELIVRD"}),
    "ids_at_max_length": dlr_doc(dlr_id="d" * 128, message_id="m" * 128, tenant_id="t" * 64,
                                 operator_id="o" * 64, smsc_id="s" * 64),
    "done_59s_before_submitted": dlr_doc(submitted_at="2026-04-10T10:15:59.999Z",
                                         done_at="2026-04-10T10:15:00Z"),
    **{f"status_{s.value}": dlr_doc(status=s.value) for s in DlrStatus},
}

# name -> (document, reason both the schema and the parser reject it for)
INVALID: dict[str, tuple[Any, DlrReason]] = {
    **{f"missing_{f}": (dlr_doc(**{f: ...}), DlrReason.MISSING_FIELD) for f in FIELDS},
    "unknown_field": (dlr_doc(msisnd="+4915123456789"), DlrReason.UNKNOWN_FIELD),
    "extension_upper_prefix": (dlr_doc(X_trace="a"), DlrReason.UNKNOWN_FIELD),
    "extension_empty_name": (dlr_doc(x_="a"), DlrReason.UNKNOWN_FIELD),
    "extension_bad_char": (dlr_doc(**{"x_trace-id": "a"}), DlrReason.UNKNOWN_FIELD),
    "extension_trailing_newline": (dlr_doc(**{"x_trace\n": "a"}), DlrReason.UNKNOWN_FIELD),
    "schema_version_2": (dlr_doc(schema_version=2), DlrReason.UNSUPPORTED_SCHEMA_VERSION),
    "schema_version_string": (dlr_doc(schema_version="1"), DlrReason.UNSUPPORTED_SCHEMA_VERSION),
    "schema_version_true": (dlr_doc(schema_version=True), DlrReason.UNSUPPORTED_SCHEMA_VERSION),
    "not_an_object": ([dlr_doc()], DlrReason.NOT_AN_OBJECT),
    "dlr_id_number": (dlr_doc(dlr_id=123), DlrReason.WRONG_TYPE),
    "msisdn_number": (dlr_doc(msisdn=4915123456789), DlrReason.WRONG_TYPE),
    "segments_string": (dlr_doc(segments="2"), DlrReason.WRONG_TYPE),
    "segments_bool": (dlr_doc(segments=True), DlrReason.WRONG_TYPE),
    "segments_fraction": (dlr_doc(segments=1.5), DlrReason.WRONG_TYPE),
    "error_code_number": (dlr_doc(error_code=11), DlrReason.WRONG_TYPE),
    "status_null": (dlr_doc(status=None), DlrReason.WRONG_TYPE),
    "msisdn_no_plus": (dlr_doc(msisdn="4915123456789"), DlrReason.INVALID_MSISDN),
    "msisdn_leading_zero": (dlr_doc(msisdn="+04915123456"), DlrReason.INVALID_MSISDN),
    "msisdn_7_digits": (dlr_doc(msisdn="+1234567"), DlrReason.INVALID_MSISDN),
    "msisdn_16_digits": (dlr_doc(msisdn="+1234567890123456"), DlrReason.INVALID_MSISDN),
    "msisdn_spaces": (dlr_doc(msisdn="+49 151 23456789"), DlrReason.INVALID_MSISDN),
    "msisdn_arabic_digits": (dlr_doc(msisdn="+٤٩١٥١٢٣٤٥٦٧٨٩"), DlrReason.INVALID_MSISDN),
    "msisdn_trailing_newline": (dlr_doc(msisdn="+4915123456789\n"), DlrReason.INVALID_MSISDN),
    "status_lowercase": (dlr_doc(status="delivered"), DlrReason.INVALID_STATUS),
    "status_unknown_value": (dlr_doc(status="FAILED"), DlrReason.INVALID_STATUS),
    "time_naive": (dlr_doc(done_at="2026-04-10T10:15:03"), DlrReason.INVALID_TIMESTAMP),
    "time_lowercase_z": (dlr_doc(done_at="2026-04-10T10:15:03z"), DlrReason.INVALID_TIMESTAMP),
    "time_space_separator": (dlr_doc(done_at="2026-04-10 10:15:03Z"), DlrReason.INVALID_TIMESTAMP),
    "time_offset_no_colon": (dlr_doc(done_at="2026-04-10T10:15:03+0100"),
                             DlrReason.INVALID_TIMESTAMP),
    "time_offset_24h": (dlr_doc(done_at="2026-04-10T10:15:03+24:00"), DlrReason.INVALID_TIMESTAMP),
    "time_hour_24": (dlr_doc(done_at="2026-04-10T24:00:00Z"), DlrReason.INVALID_TIMESTAMP),
    "time_leap_second": (dlr_doc(done_at="2026-06-30T23:59:60Z"), DlrReason.INVALID_TIMESTAMP),
    "time_ten_fraction_digits": (dlr_doc(done_at="2026-04-10T10:15:03.1234567890Z"),
                                 DlrReason.INVALID_TIMESTAMP),
    "time_date_only": (dlr_doc(done_at="2026-04-10"), DlrReason.INVALID_TIMESTAMP),
    "time_epoch_number": (dlr_doc(done_at=1775816103), DlrReason.WRONG_TYPE),
    "time_trailing_newline": (dlr_doc(done_at="2026-04-10T10:15:03Z\n"),
                              DlrReason.INVALID_TIMESTAMP),
    "segments_zero": (dlr_doc(segments=0), DlrReason.SEGMENTS_OUT_OF_RANGE),
    "segments_256": (dlr_doc(segments=256), DlrReason.SEGMENTS_OUT_OF_RANGE),
    "segments_negative": (dlr_doc(segments=-1), DlrReason.SEGMENTS_OUT_OF_RANGE),
    "dlr_id_empty": (dlr_doc(dlr_id=""), DlrReason.INVALID_ID),
    "dlr_id_too_long": (dlr_doc(dlr_id="d" * 129), DlrReason.INVALID_ID),
    "dlr_id_space": (dlr_doc(dlr_id="dlr 1"), DlrReason.INVALID_ID),
    "dlr_id_non_ascii": (dlr_doc(dlr_id="dlr-é"), DlrReason.INVALID_ID),
    "dlr_id_trailing_newline": (dlr_doc(dlr_id="dlr-1\n"), DlrReason.INVALID_ID),
    "operator_id_with_dot": (dlr_doc(operator_id="op.a"), DlrReason.INVALID_ID),
    "tenant_id_too_long": (dlr_doc(tenant_id="t" * 65), DlrReason.INVALID_ID),
    "smsc_id_slash": (dlr_doc(smsc_id="smsc/1"), DlrReason.INVALID_ID),
    "sender_empty": (dlr_doc(sender_id=""), DlrReason.INVALID_SENDER_ID),
    "sender_leading_space": (dlr_doc(sender_id=" ACME"), DlrReason.INVALID_SENDER_ID),
    "sender_17_chars": (dlr_doc(sender_id="A" * 17), DlrReason.INVALID_SENDER_ID),
    "sender_non_ascii": (dlr_doc(sender_id="Café"), DlrReason.INVALID_SENDER_ID),
    "sender_control_char": (dlr_doc(sender_id="AC\tME"), DlrReason.INVALID_SENDER_ID),
    "error_code_empty": (dlr_doc(error_code=""), DlrReason.INVALID_ERROR_CODE),
    "error_code_too_long": (dlr_doc(error_code="e" * 33), DlrReason.INVALID_ERROR_CODE),
    "error_code_space": (dlr_doc(error_code="err 1"), DlrReason.INVALID_ERROR_CODE),
}

# Rules JSON Schema cannot state: the schema accepts these, the parser must not.
PARSER_STRICTER: dict[str, tuple[dict[str, Any], DlrReason]] = {
    # JSON Schema's "integer" and "const": 1 match any number with a zero fraction.
    "segments_written_2.0": (dlr_doc(segments=2.0), DlrReason.WRONG_TYPE),
    "schema_version_written_1.0": (dlr_doc(schema_version=1.0),
                                   DlrReason.UNSUPPORTED_SCHEMA_VERSION),
    # "format": "date-time" is an annotation; the pattern cannot know month lengths.
    "time_30_february": (dlr_doc(done_at="2026-02-30T10:00:00Z"), DlrReason.INVALID_TIMESTAMP),
    "time_29_february_non_leap": (dlr_doc(done_at="2025-02-29T10:00:00Z"),
                                  DlrReason.INVALID_TIMESTAMP),
    "time_year_zero": (dlr_doc(submitted_at="0000-01-01T00:00:00Z"), DlrReason.INVALID_TIMESTAMP),
    # Cross-field rule.
    "done_61s_before_submitted": (dlr_doc(submitted_at="2026-04-10T10:16:01Z",
                                          done_at="2026-04-10T10:15:00Z"),
                                  DlrReason.DONE_BEFORE_SUBMITTED),
}


class TestContractCorpus:
    @pytest.mark.parametrize("name", sorted(VALID))
    def test_valid_documents_pass_schema_and_parser(self, name: str) -> None:
        doc = VALID[name]
        assert schema_accepts(doc), list(VALIDATOR.iter_errors(doc))
        assert parser_reason(doc) is None

    @pytest.mark.parametrize("name", sorted(INVALID))
    def test_invalid_documents_fail_schema_and_parser_with_reason(self, name: str) -> None:
        doc, reason = INVALID[name]
        assert not schema_accepts(doc)
        assert parser_reason(doc) == reason.value

    @pytest.mark.parametrize("name", sorted(PARSER_STRICTER))
    def test_rules_beyond_json_schema_are_enforced_by_the_parser(self, name: str) -> None:
        doc, reason = PARSER_STRICTER[name]
        assert schema_accepts(doc)
        assert parser_reason(doc) == reason.value

    def test_schema_states_the_parsers_fields_patterns_and_statuses(self) -> None:
        props = SCHEMA["properties"]
        assert SCHEMA["required"] == list(FIELDS)
        assert set(props) == set(FIELDS)
        assert SCHEMA["additionalProperties"] is False
        assert list(SCHEMA["patternProperties"]) == [f"^{PATTERNS['extension_key']}$"]
        for field in ("dlr_id", "message_id", "tenant_id", "operator_id", "sender_id",
                      "msisdn", "smsc_id", "error_code"):
            assert props[field]["pattern"] == f"^{PATTERNS[field]}$", field
        for field in ("submitted_at", "done_at"):
            assert props[field]["pattern"] == f"^{PATTERNS['timestamp']}$"
        assert props["status"]["enum"] == [s.value for s in DlrStatus]
        assert (props["segments"]["minimum"], props["segments"]["maximum"]) == (1, 255)

    def test_schema_patterns_are_portable_ecma_262(self) -> None:
        # \d and \w mean different things across regex engines (Python: any Unicode digit).
        for pattern in PATTERNS.values():
            assert not re.search(r"\\[dDwWsS]", pattern), pattern

    @settings(max_examples=200, deadline=None)
    @given(st.data())
    def test_generated_valid_documents_pass_both(self, data: st.DataObject) -> None:
        doc = data.draw(valid_dlr_docs())
        assert schema_accepts(doc)
        assert parser_reason(doc) is None


def valid_dlr_docs() -> st.SearchStrategy[dict[str, Any]]:
    ident = st.from_regex(r"\A[A-Za-z0-9._:-]{1,40}\Z")
    token = st.from_regex(r"\A[A-Za-z0-9_-]{1,20}\Z")
    instant = st.datetimes(
        min_value=dt.datetime(2000, 1, 2), max_value=dt.datetime(2099, 12, 30),
        timezones=st.just(UTC),
    )
    offset_minutes = st.integers(-(23 * 60 + 59), 23 * 60 + 59)

    def rfc3339(moment: dt.datetime, minutes: int) -> str:
        local = moment.astimezone(dt.timezone(dt.timedelta(minutes=minutes)))
        text = local.strftime("%Y-%m-%dT%H:%M:%S") + f".{local.microsecond:06d}"
        zone = "Z" if minutes == 0 else local.strftime("%z")[:3] + ":" + local.strftime("%z")[3:]
        return text + zone

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        submitted = draw(instant)
        done = submitted + dt.timedelta(milliseconds=draw(st.integers(-59_999, 10**9)))
        return {
            "schema_version": 1,
            "dlr_id": draw(ident),
            "message_id": draw(ident),
            "tenant_id": draw(token),
            "operator_id": draw(token),
            "sender_id": draw(st.from_regex(rf"\A{PATTERNS['sender_id']}\Z")),
            "msisdn": draw(st.from_regex(r"\A\+[1-9][0-9]{7,14}\Z")),
            "status": draw(st.sampled_from([s.value for s in DlrStatus])),
            "submitted_at": rfc3339(submitted, draw(offset_minutes)),
            "done_at": rfc3339(done, draw(offset_minutes)),
            "segments": draw(st.integers(1, 255)),
            "error_code": draw(st.none() | st.from_regex(r"\A[A-Za-z0-9._:-]{1,32}\Z")),
            "smsc_id": draw(ident),
        }

    return build()


# ---------------------------------------------------------------- raw-bytes rules ----------

class TestRawPayload:
    def test_parses_the_reference_document_into_utc_fields(self) -> None:
        dlr = parse_dlr(json.dumps(BASE_DLR).encode())
        assert dlr == Dlr(
            dlr_id="0f8fad5b-d9cb-469f-a165-70867728950e",
            message_id="msg-000001",
            tenant_id="tenant-1",
            operator_id="op-a",
            sender_id="ACME",
            msisdn="+4915123456789",
            status=DlrStatus.DELIVERED,
            submitted_at=dt.datetime(2026, 4, 10, 10, 15, 0, 123000, tzinfo=UTC),
            done_at=dt.datetime(2026, 4, 10, 10, 15, 3, 456000, tzinfo=UTC),
            segments=1,
            error_code=None,
            smsc_id="smsc-fra-1",
        )

    def test_too_large_payload_is_rejected_before_parsing(self) -> None:
        raw = json.dumps(dlr_doc(x_pad="a" * MAX_DLR_BYTES)).encode()
        with pytest.raises(InvalidDlr) as err:
            parse_dlr(raw)
        assert err.value.reason_code == "too_large"

    def test_payload_at_the_size_limit_is_accepted(self) -> None:
        raw = json.dumps(dlr_doc(x_pad="")).encode()
        raw = raw.replace(b'"x_pad": ""', b'"x_pad": "' + b"a" * (MAX_DLR_BYTES - len(raw)) + b'"')
        assert len(raw) == MAX_DLR_BYTES
        parse_dlr(raw)

    @pytest.mark.parametrize(
        ("raw", "reason"),
        [
            (b"\xff\xfe{}", "invalid_encoding"),
            (json.dumps(BASE_DLR).encode("utf-16"), "invalid_encoding"),
            (b"\xef\xbb\xbf" + json.dumps(BASE_DLR).encode(), "invalid_json"),  # UTF-8 BOM
            (b"", "invalid_json"),
            (json.dumps(BASE_DLR).encode() + b" {}", "invalid_json"),
            (json.dumps(BASE_DLR).encode()[:-1], "invalid_json"),
            (json.dumps(dlr_doc(x_value=0)).encode().replace(b'"x_value": 0', b'"x_value": NaN'),
             "invalid_json"),
            (b'"a string"', "not_an_object"),
            (json.dumps(dlr_doc(x_deep=0)).encode().replace(b": 0", DEEP),
             "invalid_json"),  # no crash
        ],
        ids=["latin1", "utf16", "bom", "empty", "trailing_value", "truncated", "nan", "string",
             "deep_nesting"],
    )
    def test_malformed_payloads(self, raw: bytes, reason: str) -> None:
        with pytest.raises(InvalidDlr) as err:
            parse_dlr(raw)
        assert err.value.reason_code == reason

    def test_duplicate_member_is_rejected_even_if_values_agree(self) -> None:
        raw = json.dumps(BASE_DLR).encode()[:-1] + b', "status": "DELIVERED"}'
        with pytest.raises(InvalidDlr) as err:
            parse_dlr(raw)
        assert err.value.reason_code == "duplicate_key"
        assert "status" in err.value.detail

    def test_duplicate_member_inside_an_extension_is_rejected(self) -> None:
        raw = json.dumps(BASE_DLR).encode()[:-1] + b', "x_raw": {"a": 1, "a": 2}}'
        with pytest.raises(InvalidDlr) as err:
            parse_dlr(raw)
        assert err.value.reason_code == "duplicate_key"

    def test_bad_msisdn_detail_never_echoes_the_number(self) -> None:
        with pytest.raises(InvalidDlr) as err:
            parse_dlr(json.dumps(dlr_doc(msisdn="+49151234567890123")).encode())
        assert "49151234567890123" not in str(err.value)

    def test_first_problem_in_field_order_is_reported(self) -> None:
        doc = dlr_doc(msisdn="nope", segments=0, dlr_id="")
        assert parser_reason(doc) == "invalid_id"  # dlr_id comes before msisdn and segments

    def test_v2_message_is_reported_as_unsupported_version_not_unknown_fields(self) -> None:
        assert parser_reason(dlr_doc(schema_version=2, price_minor=5)) == (
            "unsupported_schema_version"
        )

    def test_every_reason_is_a_stable_snake_case_label(self) -> None:
        for reason in DlrReason:
            assert re.fullmatch(r"[a-z_]+", reason.value)
        assert InvalidDlr("invalid_msisdn", "x").reason_code == "invalid_msisdn"
        with pytest.raises(ValueError):
            InvalidDlr("made_up_reason", "x")


class TestTimestamps:
    @pytest.mark.parametrize(
        ("text", "utc"),
        [
            ("2026-04-10T10:15:03Z", dt.datetime(2026, 4, 10, 10, 15, 3, tzinfo=UTC)),
            ("2026-04-10T15:45:03+05:30", dt.datetime(2026, 4, 10, 10, 15, 3, tzinfo=UTC)),
            ("2026-04-09T23:15:03-11:00", dt.datetime(2026, 4, 10, 10, 15, 3, tzinfo=UTC)),
            ("2026-12-31T23:30:00-01:00", dt.datetime(2027, 1, 1, 0, 30, tzinfo=UTC)),
            ("2026-04-10T10:15:03.9999999Z",
             dt.datetime(2026, 4, 10, 10, 15, 3, 999000, tzinfo=UTC)),
            ("2026-04-10T10:15:03.1Z", dt.datetime(2026, 4, 10, 10, 15, 3, 100000, tzinfo=UTC)),
            ("2026-04-10T10:15:03-00:00", dt.datetime(2026, 4, 10, 10, 15, 3, tzinfo=UTC)),
        ],
    )
    def test_offsets_normalise_to_utc_and_fractions_truncate_to_ms(
        self, text: str, utc: dt.datetime
    ) -> None:
        dlr = parse_dlr(json.dumps(dlr_doc(submitted_at=text, done_at=text)).encode())
        assert dlr.done_at == utc
        assert dlr.done_at.utcoffset() == dt.timedelta(0)

    def test_clock_skew_tolerance_is_measured_between_utc_instants(self) -> None:
        # 10:15:30+01:00 is 09:15:30Z: an hour *before* submission despite the larger digits.
        doc = dlr_doc(submitted_at="2026-04-10T09:15:00Z", done_at="2026-04-10T10:15:30+01:00")
        assert parser_reason(doc) is None
        doc = dlr_doc(submitted_at="2026-04-10T10:15:00Z", done_at="2026-04-10T10:15:30+01:00")
        assert parser_reason(doc) == "done_before_submitted"


class TestNormalisedForm:
    def test_to_dict_round_trips(self) -> None:
        dlr = parse_dlr(json.dumps(VALID["offset_negative"]).encode())
        again = parse_dlr(orjson.dumps(dlr.to_dict()))
        assert again == dlr
        assert dlr.to_dict()["done_at"] == "2026-04-10T10:15:09.500Z"

    def test_fingerprint_ignores_encoding_and_extensions(self) -> None:
        base = parse_dlr(json.dumps(BASE_DLR).encode())
        reordered = dict(reversed(list(BASE_DLR.items())))
        variant = dlr_doc(submitted_at="2026-04-10T12:15:00.123+02:00", x_trace="t-1")
        for doc in (reordered, variant):
            other = parse_dlr(json.dumps(doc, indent=2).encode())
            assert other.fingerprint() == base.fingerprint()

    @pytest.mark.parametrize(
        "change",
        [{"status": "EXPIRED"}, {"segments": 2}, {"msisdn": "+4915123456780"},
         {"error_code": "001"}, {"done_at": "2026-04-10T10:15:03.457Z"}],
    )
    def test_fingerprint_changes_with_any_contract_field(self, change: dict[str, Any]) -> None:
        base = parse_dlr(json.dumps(BASE_DLR).encode())
        other = parse_dlr(json.dumps(dlr_doc(**change)).encode())
        assert other.fingerprint() != base.fingerprint()
