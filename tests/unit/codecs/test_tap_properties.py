"""Properties of TAP encoding over generated files (500 examples each).

* round trip: encode -> decode gives back the records (at TAP's second precision);
* totals reconcile: AuditControlInfo is the sum of the records, checked on a decode with the
  full reference modules;
* canonical bytes: any order of the same records, and the streaming writer, give identical bytes;
* every value written satisfies the TD.57 rules the ASN.1 does not enforce.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdr_mediation.codecs.constraints import checker
from cdr_mediation.codecs.tap import TapFileWriter, decode_tap_file, encode_tap_file
from cdr_mediation.codecs.tap.record import AmountScale
from cdr_mediation.codecs.tap.timestamps import parse_zone
from cdr_mediation.domain.cdr import Cdr, format_utc

from .codec_factories import cdrs_for, files, headers, reference_tap, replace, truncated

PROPERTY = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(files())
def test_encode_then_decode_gives_the_records_back(file: tuple[Any, list[Cdr]]):
    header, records = file
    view = decode_tap_file(encode_tap_file(header, records))
    scale = AmountScale(header.currency_exponent, header.tap_decimal_places)
    assert (view.sender, view.recipient, view.file_sequence_number) == (
        header.sender,
        header.recipient,
        header.file_sequence_number,
    )
    assert (view.test_data, view.rap_file_sequence_number) == (header.test_data, header.rap_file_sequence_number)
    assert view.transfer_cut_off == header.transfer_cut_off.replace(microsecond=0)
    assert view.kind == ("transferBatch" if records else "notification")
    assert len(view.records) == len(records)
    for read, cdr in zip(view.records, records):
        assert (read.cdr_id, read.chain_seq, read.record_type, read.ref_cdr_id, read.error_code) == (
            cdr.cdr_id,
            cdr.chain_seq,
            cdr.record_type,
            cdr.ref_cdr_id,
            cdr.error_code,
        )
        assert (read.msisdn, read.sender_id, read.smsc_id) == (cdr.msisdn, cdr.sender_id, cdr.smsc_id)
        assert (read.submitted_at, read.done_at) == (truncated(cdr.submitted_at), truncated(cdr.done_at))
        assert (scale.to_minor(read.charge), scale.to_minor(read.tax)) == (cdr.amount_minor, cdr.tax_minor)
        assert (read.segments, read.charged_units) == (cdr.segments, cdr.segments if cdr.billable else 0)
    assert view.reconciliation_errors() == []


@PROPERTY
@given(files(min_records=1))
def test_audit_totals_reconcile_with_the_records_on_a_reference_decode(file: tuple[Any, list[Cdr]]):
    header, records = file
    kind, batch = reference_tap().decode(encode_tap_file(header, records))
    assert kind == "transferBatch"
    events = [event for _, event in batch["callEventDetails"]]
    audit = batch["auditControlInfo"]
    charges = [e["chargeInformation"]["chargeDetailList"][0]["charge"] for e in events]
    taxes = [e["chargeInformation"]["taxInformation"][0]["taxValue"] for e in events]
    assert audit["callEventDetailsCount"] == len(events) == len(records)
    assert audit["totalCharge"] == sum(charges)
    assert audit["totalTaxValue"] == sum(taxes)
    assert audit["totalDiscountValue"] == 0
    # and in the CDRs' own terms: the totals are the records' minor units, scaled exactly
    factor = 10 ** header.tap_decimal_places
    divisor = 10**header.currency_exponent
    assert audit["totalCharge"] * divisor == sum(r.amount_minor for r in records) * factor
    assert audit["totalTaxValue"] * divisor == sum(r.tax_minor for r in records) * factor
    # earliest/latest: the completion times, in local time with the literal offset
    offsets = {i["utcTimeOffsetCode"]: i["utcTimeOffset"] for i in batch["networkInfo"]["utcTimeOffsetInfo"]}
    completions = [
        _instant(e["scuTimeStamps"]["completionTimeStamp"]["localTimeStamp"], offsets[e["scuTimeStamps"]["completionTimeStamp"]["utcTimeOffsetCode"]])
        for e in events
    ]
    earliest, latest = audit["earliestCallTimeStamp"], audit["latestCallTimeStamp"]
    assert _instant(earliest["localTimeStamp"], earliest["utcTimeOffset"]) == min(completions)
    assert _instant(latest["localTimeStamp"], latest["utcTimeOffset"]) == max(completions)


def _instant(local: bytes, offset: bytes) -> dt.datetime:
    return dt.datetime.strptime(local.decode(), "%Y%m%d%H%M%S").replace(tzinfo=parse_zone(offset.decode()))


@PROPERTY
@given(files(max_records=8), st.randoms(use_true_random=False))
def test_any_order_of_the_same_records_gives_the_same_bytes(file: tuple[Any, list[Cdr]], random: Any):
    header, records = file
    expected = encode_tap_file(header, records)
    shuffled = list(records)
    random.shuffle(shuffled)
    assert encode_tap_file(header, shuffled) == expected
    assert encode_tap_file(header, tuple(reversed(records))) == expected


@st.composite
def files_of_equal_timestamps(draw: Any) -> tuple[Any, list[Cdr]]:
    """Records that tie on every time field: only chain order can order them."""
    header = draw(headers())
    count = draw(st.integers(2, 8))
    seqs = sorted(draw(st.sets(st.integers(1, 10**6), min_size=count, max_size=count)))
    first = draw(cdrs_for(header, seqs[0]))
    return header, [replace(draw(cdrs_for(header, seq)), submitted_at=first.submitted_at, done_at=first.done_at) for seq in seqs]


@PROPERTY
@given(files_of_equal_timestamps(), st.randoms(use_true_random=False))
def test_records_tying_on_time_are_ordered_by_chain_sequence_whatever_the_input_order(
    file: tuple[Any, list[Cdr]], random: Any
):
    header, records = file
    shuffled = list(records)
    random.shuffle(shuffled)
    data = encode_tap_file(header, shuffled)
    assert data == encode_tap_file(header, records)
    assert [r.chain_seq for r in decode_tap_file(data).records] == [r.chain_seq for r in records]


@PROPERTY
@given(files(max_records=8), st.integers(1, 4))
def test_streaming_writer_in_any_batch_sizes_equals_the_in_memory_bytes(file: tuple[Any, list[Cdr]], batch: int):
    header, records = file
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.tap"
        with TapFileWriter(path, header, fsync=False) as writer:
            for start in range(0, len(records), batch):
                writer.add_all(records[start : start + batch])
        assert path.read_bytes() == encode_tap_file(header, records)
        assert writer.summary is not None and writer.summary.size == path.stat().st_size


@PROPERTY
@given(files())
def test_everything_written_satisfies_the_rules_the_asn1_does_not_enforce(file: tuple[Any, list[Cdr]]):
    header, records = file
    decoded = reference_tap().decode(encode_tap_file(header, records))
    checker().check("DataInterChange", decoded, path="", scope="file")


def test_format_utc_round_trip_used_by_the_strategies():
    moment = dt.datetime(2026, 3, 1, 10, 0, 5, 999999, tzinfo=dt.timezone.utc)
    assert truncated(format_utc(moment)) == moment.replace(microsecond=0)
