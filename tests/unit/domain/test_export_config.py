"""The export configuration and what a closed day fixes about its file: name, sequence, times."""

from __future__ import annotations

import copy
import datetime as dt
import json

import pytest

from cdr_mediation.codecs.tap.header_groups import validate_header
from cdr_mediation.domain.day_close import DayClosed
from cdr_mediation.domain.export_config import (
    EXPORT_CONFIG_FORMAT,
    ExportConfigError,
    day_cut_off,
    file_header,
    file_name,
    load_export_config,
)

UTC = dt.timezone.utc
DOCUMENT = {
    "format": EXPORT_CONFIG_FORMAT, "recipient": "ATRAA",
    "operators": {"op-a": {"sender": "AFGAW", "time_zone": "+0430", "currency": "AFN", "currency_exponent": 2,
                           "tap_decimal_places": 2},
                  "op-b": {"sender": "AFGRS", "time_zone": "+0430", "currency": "AFN", "currency_exponent": 2,
                           "tap_decimal_places": 3, "export_format": "ATRA_CSV_V1",
                           "format_options": {"delimiter": ";"}}},
}
CLOSED = DayClosed("op-a", "2026-11-01", "event", 812, "ab" * 32, "2026-11-02T02:00:00.417Z", 42)


def _load(document=DOCUMENT):
    return load_export_config(json.dumps(document).encode())


def test_a_closed_day_fixes_its_file_name_sequence_and_times() -> None:
    config = _load()
    header = file_header(config, CLOSED)
    assert file_name(config, config.operator("op-a"), CLOSED.day_sequence) == "CDAFGAWATRAA00042"
    assert header.file_sequence_number == 42
    assert header.transfer_cut_off == dt.datetime(2026, 11, 2, tzinfo=UTC) == day_cut_off("2026-11-01")
    assert header.file_available == dt.datetime(2026, 11, 2, 2, 0, 0, tzinfo=UTC)  # the closing watermark
    assert (header.sender, header.recipient, header.currency, header.test_data) == ("AFGAW", "ATRAA", "AFN", False)
    validate_header(header)  # a header the TAP encoder accepts
    assert file_header(config, CLOSED) == header  # nothing from the clock


def test_test_data_files_are_named_td() -> None:
    config = _load({**DOCUMENT, "test_data": True})
    assert file_name(config, config.operator("op-a"), 7) == "TDAFGAWATRAA00007"
    assert file_header(config, CLOSED).test_data


def test_the_adapter_configuration_names_each_operators_format() -> None:
    adapters = _load().adapter_config()
    assert adapters["operators"]["op-b"] == {"format": "ATRA_CSV_V1", "options": {"delimiter": ";"}}
    assert adapters["operators"]["op-a"]["format"] == "ATRA_TAP_312_V1"


def test_sequence_numbers_are_five_digits() -> None:
    config = _load()
    with pytest.raises(ExportConfigError, match="1..99999"):
        file_name(config, config.operator("op-a"), 100_000)
    with pytest.raises(ExportConfigError):
        file_name(config, config.operator("op-a"), 0)


def _broken(change) -> dict:
    document = copy.deepcopy(DOCUMENT)
    change(document)
    return document


@pytest.mark.parametrize("change,message", [
    (lambda d: d.update(format="v0"), "format"),
    (lambda d: d.update(recipient="atra"), "TADIG"),
    (lambda d: d["operators"]["op-a"].update(sender="ATRAA"), "both ATRAA"),
    (lambda d: d["operators"]["op-a"].update(export_format="PDF"), "unknown export_format"),
    (lambda d: d["operators"]["op-a"].update(delimiter=";"), "unknown \\['delimiter'\\]"),
    (lambda d: d["operators"]["op-a"].pop("currency"), "missing \\['currency'\\]"),
    (lambda d: d["operators"]["op-a"].update(currency_exponent="2"), "integer"),
    (lambda d: d.update(operators={}), "non-empty"),
    (lambda d: d.update(test_data="yes"), "true or false"),
    (lambda d: d.update(extra=1), "unknown \\['extra'\\]"),
])
def test_a_wrong_configuration_is_refused_with_what_is_wrong(change, message) -> None:
    with pytest.raises(ExportConfigError, match=message):
        _load(_broken(change))


def test_an_operator_without_configuration_is_named() -> None:
    with pytest.raises(ExportConfigError, match="op-z"):
        file_header(_load(), DayClosed("op-z", "2026-11-01", "tick", 1, "ab" * 32, "2026-11-02T02:00:00.000Z", 1))
    with pytest.raises(ExportConfigError, match="not JSON"):
        load_export_config(b"{")
