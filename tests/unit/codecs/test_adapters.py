"""Export formats behind one interface, chosen per operator."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cdr_mediation.codecs.adapters import (
    CDR_FIELDS,
    DEFAULT_FORMAT,
    ExportSummary,
    export_format,
    export_format_for,
    register,
    registered_formats,
)
from cdr_mediation.codecs.errors import CodecValidationError
from cdr_mediation.codecs.header import TapCodes
from cdr_mediation.codecs.tap import decode_tap_file, encode_tap_file
from cdr_mediation.domain.cdr import DlrStatus, RecordType

from .codec_factories import make_cdr, make_header

CONFIG = {
    "default_format": "ATRA_TAP_312_V1",
    "operators": {
        "op-csv": {"format": "ATRA_CSV_V1", "options": {"delimiter": ";", "columns": ["cdr_id", "msisdn", "amount_minor"]}},
        "op-jsonl": {"format": "ATRA_JSONL_V1"},
        "op-tap-codes": {"options": {"codes": {"message_type": 9, "message_status": {"DELIVERED": 11, "UNDELIVERED": 12, "EXPIRED": 13, "REJECTED": 14, "UNKNOWN": 10}}}},
    },
}


def test_registry_knows_the_formats():
    assert DEFAULT_FORMAT == "ATRA_TAP_312_V1"
    assert {"ATRA_TAP_312_V1", "ATRA_CSV_V1", "ATRA_JSONL_V1"} <= set(registered_formats())
    with pytest.raises(ValueError, match="unknown export format 'NOPE'"):
        export_format("NOPE")
    with pytest.raises(ValueError, match="already registered"):
        register("ATRA_CSV_V1")(lambda options: export_format("ATRA_CSV_V1"))


def test_format_is_chosen_per_operator():
    assert export_format_for(CONFIG, "op-unknown").name == "ATRA_TAP_312_V1"
    assert export_format_for({}, "op-a").name == "ATRA_TAP_312_V1"
    assert export_format_for(CONFIG, "op-csv").name == "ATRA_CSV_V1"
    assert export_format_for(CONFIG, "op-jsonl").file_extension == ".jsonl"
    assert export_format_for({"default_format": "ATRA_JSONL_V1"}, "op-a").name == "ATRA_JSONL_V1"


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("ATRA_TAP_312_V1", {"colour": "red"}, "ATRA_TAP_312_V1: unknown option(s) colour"),
        ("ATRA_TAP_312_V1", {"codes": {"charged_itme": "E"}}, "unknown TAP code setting(s): charged_itme"),
        ("ATRA_CSV_V1", {"delimiter": "\n"}, "delimiter must be one character"),
        ("ATRA_CSV_V1", {"columns": ["cdr_id", "nope"]}, "fields must be distinct CDR fields"),
        ("ATRA_JSONL_V1", {"fields": ["cdr_id", "cdr_id"]}, "fields must be distinct CDR fields"),
    ],
)
def test_bad_options_are_rejected_when_the_format_is_built(name, options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        export_format(name, options)


def test_tap_format_writes_the_tap_encoders_bytes(tmp_path: Path):
    records = [make_cdr(1), make_cdr(2, amount_minor=200, tax_minor=20)]
    summary = export_format_for(CONFIG, "op-a").write(tmp_path / "f.tap", make_header(), records)
    assert (tmp_path / "f.tap").read_bytes() == encode_tap_file(make_header(), records)
    assert summary == ExportSummary("ATRA_TAP_312_V1", 2, summary.size, 1, 2, 350, 35)


def test_tap_format_applies_the_operators_codes(tmp_path: Path):
    path = tmp_path / "f.tap"
    export_format_for(CONFIG, "op-tap-codes").write(path, make_header(), [make_cdr(1, status=DlrStatus.EXPIRED)])
    assert decode_tap_file(path.read_bytes()).records[0].message_status == 13
    expected = make_header(codes=TapCodes.from_config(CONFIG["operators"]["op-tap-codes"]["options"]["codes"]))
    assert path.read_bytes() == encode_tap_file(expected, [make_cdr(1, status=DlrStatus.EXPIRED)])


def test_csv_format_bytes(tmp_path: Path):
    records = [
        make_cdr(1),
        make_cdr(2, record_type=RecordType.VOID, ref_cdr_id="cdr-000001", amount_minor=0, tax_minor=0, sender_id='Say "hi", ok'),
    ]
    summary = export_format("ATRA_CSV_V1").write(tmp_path / "f.csv", make_header(), records)
    lines = (tmp_path / "f.csv").read_bytes().split(b"\r\n")
    assert lines[0] == ",".join(CDR_FIELDS).encode()
    assert lines[1].startswith(b"CDR,cdr-000001,dlr-1,msg-1,tenant-1,op-a,ACME,+93701234567,DELIVERED,")
    assert b',"Say ""hi"", ok",' in lines[2] and b",true," in lines[1] and lines[2].endswith(b",cdr-000001,,")
    assert lines[3] == b"" and len(lines) == 4
    assert (summary.record_count, summary.total_amount_minor, summary.last_chain_seq) == (2, 150, 2)


def test_csv_format_with_configured_columns(tmp_path: Path):
    export_format_for(CONFIG, "op-csv").write(tmp_path / "f.csv", make_header(operator_id="op-csv"), [make_cdr(1, operator_id="op-csv")])
    assert (tmp_path / "f.csv").read_bytes() == b"cdr_id;msisdn;amount_minor\r\ncdr-000001;+93701234567;150\r\n"
    export_format("ATRA_CSV_V1", {"header_row": False, "columns": ["chain_seq"]}).write(
        tmp_path / "g.csv", make_header(), [make_cdr(7)]
    )
    assert (tmp_path / "g.csv").read_bytes() == b"7\r\n"


def test_jsonl_format_lines(tmp_path: Path):
    records = [make_cdr(1), make_cdr(3, error_code="E1", status=DlrStatus.REJECTED)]
    summary = export_format("ATRA_JSONL_V1").write(tmp_path / "f.jsonl", make_header(), records)
    data = (tmp_path / "f.jsonl").read_bytes()
    lines = data.split(b"\n")
    assert lines[-1] == b"" and len(lines) == 5
    assert json.loads(lines[0])["file"]["file_sequence_number"] == 42
    assert json.loads(lines[1]) == records[0].to_entry()
    assert lines[1] == json.dumps(records[0].to_entry(), sort_keys=True, separators=(",", ":")).encode()
    assert json.loads(lines[3]) == {
        "trailer": {"record_count": 2, "first_chain_seq": 1, "last_chain_seq": 3, "total_amount_minor": 300, "total_tax_minor": 30}
    }
    assert summary.size == len(data)
    export_format("ATRA_JSONL_V1").write(tmp_path / "again.jsonl", make_header(), records)
    assert (tmp_path / "again.jsonl").read_bytes() == data


def test_jsonl_format_with_selected_fields_and_no_framing(tmp_path: Path):
    fmt = export_format("ATRA_JSONL_V1", {"fields": ["chain_seq", "cdr_id"], "header_line": False, "trailer_line": False})
    fmt.write(tmp_path / "f.jsonl", make_header(), [make_cdr(1)])
    assert (tmp_path / "f.jsonl").read_bytes() == b'{"cdr_id":"cdr-000001","chain_seq":1}\n'


@pytest.mark.parametrize("name", ["ATRA_CSV_V1", "ATRA_JSONL_V1", "ATRA_TAP_312_V1"])
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"operator_id": "op-b"}, "'op-b' is not this file's operator 'op-a'"),
        ({"currency": "USD"}, "'USD' is not the file's currency 'AFN'"),
        ({"chain_seq": 1}, "1 does not follow 1: records must be in strictly increasing chain order"),
        ({"amount_minor": -1}, "-1"),
        ({"tax_minor": "1"}, "'1'|got str"),
        ({"chain_seq": 0}, "0 must be|0 does not follow"),
    ],
)
def test_every_format_rejects_foreign_records_and_writes_nothing(tmp_path: Path, name: str, bad: dict, message: str):
    records = [make_cdr(1), make_cdr(2, **bad) if "chain_seq" not in bad else make_cdr(**bad)]
    with pytest.raises(CodecValidationError, match=message) as error:
        export_format(name).write(tmp_path / "out", make_header(), records)
    assert error.value.record_index == 2
    assert str(error.value).startswith("record 2 (cdr_id=")
    assert list(tmp_path.iterdir()) == []
