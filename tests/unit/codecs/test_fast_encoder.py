"""The hand-written ServiceCentreUsage encoder gives asn1tools' bytes, byte for byte.

asn1tools encodes with the package's own TAP module here; the golden tests additionally
decode everything with the full reference module. Both encoders consume the same
`ScuFields`, so these tests compare exactly the BER serialisation.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdr_mediation.codecs import asn1
from cdr_mediation.codecs.header import FileHeader, TapCodes
from cdr_mediation.codecs.tap import encode_tap_file
from cdr_mediation.codecs.tap.fast import ScuEncoder
from cdr_mediation.codecs.tap.record import ScuFields, scu_value
from cdr_mediation.domain.cdr import DlrStatus

from .codec_factories import files, make_header

PROPERTY = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_reference = asn1.spec().modules[asn1.TAP_MODULE]["CallEventDetail"]

_octets = st.binary(min_size=1, max_size=300)
_timestamps = st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(9999, 12, 31)).map(
    lambda moment: moment.strftime("%Y%m%d%H%M%S").encode()
)
_amounts = st.one_of(st.integers(0, 300), st.integers(0, (1 << 63) - 1))


@st.composite
def codes(draw: Any) -> TapCodes:
    return TapCodes(
        charged_party_status=draw(st.integers(0, 1000)),
        exchange_rate_code=draw(st.integers(0, 70000)),
        priority_code=draw(st.integers(0, 300)),
        message_type=draw(st.integers(0, 300)),
        message_description_code=draw(st.integers(0, 70000)),
        tax_code=draw(st.integers(0, 70000)),
        message_status=tuple(zip(DlrStatus, draw(st.lists(st.integers(0, 1 << 40), min_size=5, max_size=5)))),
    )


@st.composite
def scu_fields(draw: Any, codes: TapCodes) -> ScuFields:
    """Wider than any CDR produces: long free text, large codes and amounts, many items."""
    return ScuFields(
        msisdn=draw(st.binary(min_size=1, max_size=9)),
        sender=draw(_octets),
        rec_entity_code=draw(st.one_of(st.integers(0, 300), st.integers(0, 1 << 40))),
        charge=draw(_amounts),
        chargeable_units=draw(st.integers(0, 255)),
        charged_units=draw(st.integers(0, 255)),
        tax_value=draw(_amounts),
        taxable_amount=draw(_amounts),
        message_status=draw(st.sampled_from([code for _, code in codes.message_status])),
        deposit=draw(_timestamps),
        deposit_offset_code=draw(st.integers(0, 70000)),
        completion=draw(_timestamps),
        completion_offset_code=draw(st.integers(0, 70000)),
        operator_spec=tuple(draw(st.lists(_octets, min_size=1, max_size=6))),
    )


@st.composite
def encoder_inputs(draw: Any) -> tuple[FileHeader, list[ScuFields]]:
    header = make_header(codes=draw(codes()))
    return header, draw(st.lists(scu_fields(header.codes), min_size=1, max_size=4))


@PROPERTY
@given(encoder_inputs())
def test_fast_encoder_equals_asn1tools_on_any_record_layout(inputs: tuple[FileHeader, list[ScuFields]]):
    header, records = inputs
    encoder = ScuEncoder(header.codes)  # one encoder for several records: its caches are exercised
    for fields in records:
        assert encoder.encode(fields) == _reference.encode(scu_value(fields, header))


@PROPERTY
@given(files(min_records=1))
def test_fast_and_reference_encoders_give_the_same_files_for_generated_cdrs(file: Any):
    header, records = file
    assert encode_tap_file(header, records) == encode_tap_file(header, records, record_encoder="reference")


def test_repeated_values_come_from_the_caches_and_stay_identical():
    header = make_header()
    encoder = ScuEncoder(header.codes)
    fields = ScuFields(b"\x93\x70", b"ACME", 3, 1500, 1, 1, 150, 1500, 1, b"20260301143000", 0, b"20260301143005", 1, (b"a",))
    first = encoder.encode(fields)
    for _ in range(3):
        assert encoder.encode(fields) == first == _reference.encode(scu_value(fields, header))
