"""The hot path's shortcuts give exactly what the plain formulations give.

Each optimisation in the ingest path (DESIGN.md §10) replaced a straightforward formulation by a
faster one. The plain formulations are kept here as references and compared on generated inputs:
same values, same reasons, same bytes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cdr_mediation.codecs.records import (
    UndecodableRecord,
    decode_cdr_batch,
    decode_cdr_entries,
    encode_cdr_batch,
    encode_cdr_records,
)
from cdr_mediation.domain import dlr as dlr_module
from cdr_mediation.domain.cdr import Cdr, DlrStatus, RecordType, format_utc
from cdr_mediation.domain.chain import ChainHead, entry_hash, link, record_hash
from cdr_mediation.domain.dlr import InvalidDlr, parse_dlr
from cdr_mediation.domain.ingest import DedupEntry, OperatorIngestState
from cdr_mediation.domain.projection import CDR_ID_NAMESPACE, cdr_id_for, project
from cdr_mediation.domain.strict_json import StrictJsonError, loads_strict
from cdr_mediation.infra.postgres.cdr_store import cdr_row, entry_row, record_from_row, row_to_mapping

from .domain_samples import BASE_DLR, dlr_doc
from .test_dlr import valid_dlr_docs

UTC = dt.timezone.utc


# ---------------------------------------------------------------- timestamps ---------------

def reference_format_utc(moment: dt.datetime) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("timestamp must be timezone-aware")
    utc = moment.astimezone(UTC)
    return (f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T"
            f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}.{utc.microsecond // 1000:03d}Z")


zones = st.just(UTC) | st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(
    lambda minutes: dt.timezone(dt.timedelta(minutes=minutes)))


@settings(max_examples=500, deadline=None)
@given(st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30), timezones=zones))
@example(dt.datetime(999, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC))
@example(dt.datetime(2026, 6, 30, 23, 30, 0, 123_900, tzinfo=dt.timezone(dt.timedelta(hours=-2))))
def test_format_utc_is_the_field_by_field_rendering(moment: dt.datetime) -> None:
    assert format_utc(moment) == reference_format_utc(moment)


def test_format_utc_gives_instants_of_one_second_their_own_milliseconds() -> None:
    # The text up to the second is memoised: instants of one second must still get their own
    # milliseconds (truncated), and the next second, minute, day or year never the memoised text.
    last_second = dt.datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC)
    moments = [last_second + dt.timedelta(microseconds=us)
               for us in (0, 999, 1_000, 123_456, 999_999, 1_000_000, 1_000_001, 61_000_000)]
    moments += [dt.datetime(2026, 11, 21, 13, 5, 7, us, tzinfo=UTC) for us in (0, 1, 500_500, 999_000, 999_999)]
    for moment in moments + moments[::-1]:
        assert format_utc(moment) == reference_format_utc(moment)


def test_format_utc_refuses_naive_times() -> None:
    with pytest.raises(ValueError):
        format_utc(dt.datetime(2026, 1, 1))


# ---------------------------------------------------------------- cdr_id -------------------

@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
@example("0f8fad5b-d9cb-469f-a165-70867728950e")
def test_cdr_id_is_uuid5(dlr_id: str) -> None:
    try:
        expected = str(uuid.uuid5(CDR_ID_NAMESPACE, dlr_id))
    except UnicodeEncodeError:  # lone surrogates: both refuse
        with pytest.raises(UnicodeEncodeError):
            cdr_id_for(dlr_id)
        return
    assert cdr_id_for(dlr_id) == expected


# ---------------------------------------------------------------- JSON reading -------------

def strict_outcome(read, raw: bytes) -> tuple:
    try:
        value = read(raw)
    except StrictJsonError as exc:
        return ("error", exc.kind, exc.detail)
    return ("value", _typed(value))


def _typed(value: Any) -> Any:
    """The value with every scalar's exact type, so that 1 and 1.0 and True differ."""
    if type(value) is dict:
        return ("dict", tuple((k, _typed(v)) for k, v in value.items()))
    if type(value) is list:
        return ("list", tuple(_typed(v) for v in value))
    return (type(value).__name__, value)


json_scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
                | st.text(max_size=8))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8)
whitespace = st.sampled_from(["", " ", "\t", "\n ", "\r\n"])


@st.composite
def json_object_texts(draw: st.DrawFn) -> bytes:
    """Objects with possibly repeated member names and whitespace around the colons."""
    names = draw(st.lists(st.sampled_from(["a", "b", "a\"", "\\", "x:", "é", ""]) | st.text(max_size=3),
                          max_size=6))
    members = []
    for name in names:
        value = draw(json_scalars | json_values)
        text = json.dumps(value, ensure_ascii=draw(st.booleans()))
        members.append(json.dumps(name) + draw(whitespace) + ":" + draw(whitespace) + text)
    return ("{" + draw(whitespace) + ",".join(members) + "}").encode()


@settings(max_examples=1000, deadline=None)
@given(json_object_texts() | st.binary(max_size=40) | json_values.map(lambda v: json.dumps(v).encode()))
@example(b'{"a": 1, "a" : 2}')
@example(b'{"a":"\\":", "b": 1}')
@example(b'{"a": 18446744073709551616}')
@example(b'{"a": 1e400}')
@example(b'{"a": "\\ud800"}')
@example(b'\xef\xbb\xbf{"a": 1}')
@example(b'{"a": {"b": 1, "b": 1}}')
@example(b'{"a": NaN}')
def test_dlr_json_reader_reads_what_the_strict_reader_reads(raw: bytes) -> None:
    assert strict_outcome(dlr_module._loads, raw) == strict_outcome(loads_strict, raw)


# ---------------------------------------------------------------- parse_dlr ----------------

def in_order_outcome(raw: bytes) -> tuple:
    """What `parse_dlr` did before the fast paths: strict JSON, then every check in order."""
    try:
        if len(raw) > dlr_module.MAX_DLR_BYTES:
            return ("invalid", "too_large", f"{len(raw)} bytes > {dlr_module.MAX_DLR_BYTES}")
        try:
            obj = loads_strict(raw)
        except StrictJsonError as exc:
            return ("invalid", exc.kind, exc.detail)
        return ("dlr", dlr_module._check_in_order(obj))
    except InvalidDlr as exc:
        return ("invalid", exc.reason_code, exc.detail)


def parse_outcome(raw: bytes) -> tuple:
    try:
        return ("dlr", parse_dlr(raw))
    except InvalidDlr as exc:
        return ("invalid", exc.reason_code, exc.detail)


MUTATIONS: list[Any] = [
    "", "x", " ACME", "ACME ", "+0123456789", "+491512345678901234", "DELIVERED ", "delivered",
    "2026-04-10T10:15:00Z", "2026-02-30T10:15:00Z", "2026-04-10T10:15:00", "2026-04-10t10:15:00Z",
    "2026-04-10T10:15:00.1234567891Z", "2026-04-10T10:14:00.000+00:00", "9999-12-31T23:59:59+00:00",
    "0001-01-01T00:00:00+01:00", "a\x00b", "op-a", 0, 1, 255, 256, -1, 1.0, True, None, [], {}, "ab.c:d",
    2**64, "é",
]


@st.composite
def mutated_documents(draw: st.DrawFn) -> dict[str, Any]:
    doc = draw(valid_dlr_docs()) if draw(st.booleans()) else dict(BASE_DLR)
    for _ in range(draw(st.integers(0, 3))):
        field = draw(st.sampled_from(list(dlr_module.FIELDS) + ["x_trace", "extra"]))
        choice = draw(st.integers(0, 9))
        if choice == 0:
            doc.pop(field, None)
        else:
            doc[field] = draw(st.sampled_from(MUTATIONS))
    return doc


@settings(max_examples=1500, deadline=None)
@given(mutated_documents(), st.booleans())
def test_parse_dlr_matches_the_checks_in_order(doc: dict[str, Any], ascii_only: bool) -> None:
    raw = json.dumps(doc, ensure_ascii=ascii_only).encode()
    assert parse_outcome(raw) == in_order_outcome(raw)


@pytest.mark.parametrize("raw", [
    json.dumps(BASE_DLR).encode()[:-1] + b', "status": "DELIVERED"}',
    json.dumps(BASE_DLR).encode().replace(b'"status": ', b'"status" : '),
    json.dumps(BASE_DLR).encode().replace(b'"segments": 1', b'"segments": 1.0'),
    json.dumps(BASE_DLR).encode().replace(b'"segments": 1', b'"segments": 18446744073709551617'),
    json.dumps(dlr_doc(x_raw={"a": 1})).encode(),
    json.dumps(dlr_doc(schema_version=True)).encode(),
    json.dumps(dlr_doc(sender_id="A\u0000B")).encode(),
    json.dumps(dlr_doc(done_at="2026-04-10T10:14:00.122Z")).encode(),  # 60.001 s before submitted_at
    json.dumps(dlr_doc(done_at="2026-04-10T10:14:00.123Z")).encode(),  # exactly the tolerance
    json.dumps(dlr_doc(error_code="E 1")).encode(),
    json.dumps(dlr_doc(error_code=7)).encode(),
    json.dumps(dlr_doc(segments=0)).encode(),
])
def test_parse_dlr_edge_cases_match_the_checks_in_order(raw: bytes) -> None:
    assert parse_outcome(raw) == in_order_outcome(raw)


# ---------------------------------------------------------------- CDR entries --------------

def reference_to_entry(cdr: Cdr) -> dict[str, Any]:
    entry = dataclasses.asdict(cdr)
    entry["record_type"] = cdr.record_type.value
    entry["status"] = cdr.status.value
    return entry


@settings(max_examples=200, deadline=None)
@given(valid_dlr_docs(), st.integers(0, 10**6), st.from_regex(r"\A[0-9a-f]{64}\Z"))
def test_linking_equals_replace_and_the_reference_hash(doc, seq: int, head_hash: str) -> None:
    from cdr_mediation.domain.pricing import load_snapshot

    pricing = load_snapshot(json.dumps(_pricing_for(doc)).encode())
    unlinked = project(parse_dlr(json.dumps(doc).encode()), pricing)
    assert unlinked.to_entry() == reference_to_entry(unlinked)
    linked, digest = link(ChainHead(doc["operator_id"], seq, head_hash), unlinked)
    assert linked == dataclasses.replace(unlinked, chain_seq=seq + 1, prev_hash=head_hash)
    assert digest == record_hash(reference_to_entry(linked))
    placed = project(parse_dlr(json.dumps(doc).encode()), pricing, chain_seq=seq + 1, prev_hash=head_hash)
    assert placed == linked and entry_hash(placed) == digest


def _pricing_for(doc: dict[str, Any]) -> dict[str, Any]:
    return {"format": "cdr-mediation.pricing.v1", "version": "t", "published_at": "2000-01-01T00:00:00Z",
            "operators": {doc["operator_id"]: {"currency": "EUR", "rates": [
                {"rate_id": "r/1", "effective_from": "1999-01-01T00:00:00Z", "unit_price_minor": 7,
                 "tax_rate_bp": 1900}]}}}


def test_state_and_dedup_values_keep_their_json_bytes() -> None:
    state = OperatorIngestState("op-a", 12, "ab" * 32, 77)
    entry = DedupEntry(77, "4df915ca-f22c-5214-9542-631074267f2a", 12, "cd" * 32)
    assert orjson.dumps(state.to_dict()) == orjson.dumps(dataclasses.asdict(state))
    assert orjson.dumps(entry.to_dict()) == orjson.dumps(dataclasses.asdict(entry))


# ---------------------------------------------------------------- store path ---------------

def sample_cdrs(n: int) -> list[tuple[Cdr, str]]:
    head = ChainHead("op-a", 0, "0" * 64)
    out = []
    for i in range(n):
        cdr = Cdr(RecordType.CDR, cdr_id_for(f"d{i}"), f"d{i}", f"m{i}", "t", "op-a", "ACME", "+4915100000000",
                  DlrStatus.DELIVERED if i % 3 else DlrStatus.EXPIRED, "2026-04-10T10:15:00.123Z",
                  f"2026-04-10T10:15:{i % 60:02d}.{i % 1000:03d}Z", 1 + i % 3, bool(i % 3), 5, 5, 1, "EUR", "r/1",
                  None if i % 3 else "027", "smsc", head.chain_seq + 1, head.head_hash)
        digest = record_hash(cdr)
        out.append((cdr, digest))
        head = ChainHead("op-a", cdr.chain_seq, digest)
    return out


def test_store_rows_from_entries_equal_rows_from_cdrs_and_read_back_exactly() -> None:
    batch = sample_cdrs(50)
    value = encode_cdr_batch(batch)
    from_cdrs = [cdr_row(c, h) for c, h in decode_cdr_batch(value)]
    from_entries = [tuple(entry_row(e, h)) for e, h in decode_cdr_entries(value)]
    assert from_entries == from_cdrs
    from cdr_mediation.infra.postgres.cdr_store import COLUMNS

    for (cdr, digest), row in zip(batch, from_entries):
        assert row_to_mapping(dict(zip(COLUMNS, row))) == {**cdr.to_entry(), "record_hash": digest}


def test_a_stored_row_becomes_the_record_of_its_entry() -> None:
    from cdr_mediation.infra.postgres.cdr_store import COLUMNS

    adjustment = dataclasses.replace(sample_cdrs(1)[0][0], record_type=RecordType.VOID, amount_minor=0,
                                     tax_minor=0, ref_cdr_id="4df915ca-f22c-5214-9542-631074267f2a",
                                     ticket_ref="T-1", actor="admin")
    for cdr, digest in sample_cdrs(50) + [(adjustment, record_hash(adjustment))]:
        row = cdr_row(cdr, digest)  # what the table stores, in COLUMNS order
        entry = row_to_mapping(dict(zip(COLUMNS, row)))
        del entry["record_hash"]
        record = record_from_row(row)
        assert Cdr(*record) == Cdr.from_entry(entry) == cdr
        assert all(getattr(record, name) == getattr(cdr, name) for name in record._fields)
        assert record._fields == tuple(field.name for field in dataclasses.fields(Cdr))


@pytest.mark.parametrize("column, value", [("status", "delivered"), ("record_type", "NOPE"), ("status", ["X"])])
def test_a_stored_row_with_an_unknown_status_or_type_is_refused_like_an_entry(column, value) -> None:
    from cdr_mediation.infra.postgres.cdr_store import COLUMNS

    row = list(cdr_row(*sample_cdrs(1)[0]))
    row[COLUMNS.index(column)] = value
    with pytest.raises(ValueError):
        record_from_row(row)


def _with_entry(value: bytes, change) -> bytes:
    document = orjson.loads(value)
    change(document["entries"][0]["entry"])
    return orjson.dumps(document)


@pytest.mark.parametrize("change", [
    lambda e: e.pop("cdr_id"),
    lambda e: e.update(surplus=1),
    lambda e: e.update(record_type="NOPE"),
    lambda e: e.update(status="delivered"),
    lambda e: e.update(status=["DELIVERED"]),
    lambda e: e.pop("actor"),
    lambda e: [e.pop(k) for k in ("actor", "ticket_ref", "ref_cdr_id")],
], ids=["missing", "surplus", "record_type", "status", "unhashable_status", "no_actor", "no_references"])
def test_entry_decoding_accepts_and_refuses_what_cdr_decoding_does(change) -> None:
    value = _with_entry(encode_cdr_batch(sample_cdrs(2)), change)
    try:
        expected = [cdr_row(c, h) for c, h in decode_cdr_batch(value)]
    except UndecodableRecord:
        with pytest.raises(UndecodableRecord):
            decode_cdr_entries(value)
        return
    assert [tuple(entry_row(e, h)) for e, h in decode_cdr_entries(value)] == expected


def test_cdr_records_from_entries_are_the_cdr_batch_encoding_split_in_order() -> None:
    batch = sample_cdrs(300)
    pairs = [(cdr.to_entry(), digest) for cdr, digest in batch]
    records = encode_cdr_records(pairs, max_bytes=20_000)
    assert len(records) > 1 and all(len(r) <= 20_000 for r in records)
    assert [pair for r in records for pair in decode_cdr_batch(r)] == batch
    assert encode_cdr_records(pairs) == [encode_cdr_batch(batch)]


def test_batch_outcome_entries_are_the_entries_of_its_cdrs(pricing) -> None:
    from cdr_mediation.domain.ingest import apply_batch

    raws = [json.dumps(dlr_doc(dlr_id=f"d-{n}", done_at=f"2026-04-10T10:15:{n:02d}.000Z")).encode()
            for n in range(20)]
    outcome = apply_batch(OperatorIngestState.initial("op-a"), raws, 3, pricing, lambda _: None)
    assert len(outcome.cdrs) == 20
    assert list(outcome.entries) == [linked.cdr.to_entry() for linked in outcome.cdrs]
    assert [record_hash(e) for e in outcome.entries] == [linked.record_hash for linked in outcome.cdrs]


@settings(max_examples=100, deadline=None)
@given(valid_dlr_docs())
def test_projected_money_is_the_charge(doc) -> None:
    from cdr_mediation.domain.pricing import charge, load_snapshot

    pricing = load_snapshot(json.dumps(_pricing_for(doc)).encode())
    dlr = parse_dlr(json.dumps(doc).encode())
    cdr = project(dlr, pricing)
    money = charge(pricing.rate_for(dlr.operator_id, dlr.tenant_id, dlr.done_at), dlr.status, dlr.segments)
    assert (cdr.billable, cdr.unit_price_minor, cdr.amount_minor, cdr.tax_minor, cdr.currency,
            cdr.pricing_version) == dataclasses.astuple(money)


# ---------------------------------------------------------------- sliced batches -----------

@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["new", "again", "bad", "other_operator", "reused", "unpriced"]), max_size=30),
       st.lists(st.integers(1, 7), min_size=1, max_size=10))
def test_a_batch_fed_in_slices_has_the_outcome_of_the_whole_batch(kinds, cuts) -> None:
    from cdr_mediation.domain.ingest import BatchStep, apply_batch, dedup_key
    from cdr_mediation.domain.pricing import load_snapshot

    from .domain_samples import PRICING_DOC

    pricing = load_snapshot(json.dumps(PRICING_DOC).encode())
    raws = []
    for n, kind in enumerate(kinds):
        doc = dlr_doc(dlr_id=f"d-{n}", done_at=f"2026-04-10T10:15:{n % 60:02d}.000Z")
        if kind == "again" and n:
            doc = dlr_doc(dlr_id=f"d-{n - 1}", done_at=f"2026-04-10T10:15:{(n - 1) % 60:02d}.000Z")
        elif kind == "reused":
            doc = dlr_doc(dlr_id="stored-1", segments=3)
        elif kind == "other_operator":
            doc["operator_id"] = "op-b"
        elif kind == "unpriced":  # before op-a's first rate
            doc.update(submitted_at="2025-06-01T00:00:00.000Z", done_at="2025-06-01T00:00:01.000Z")
        raw = json.dumps(doc).encode()
        raws.append(raw[:-3] if kind == "bad" else raw)
    stored = {dedup_key("op-a", "stored-1"): DedupEntry(4, "x", 9, "f" * 64)}
    state = OperatorIngestState("op-a", 9, "ab" * 32, 5)
    lookup = lambda dlr_id: stored.get(dedup_key("op-a", dlr_id))  # noqa: E731

    whole = apply_batch(state, raws, 6, pricing, lookup)
    step, start = BatchStep(state, 6, pricing, lookup), 0
    for cut in cuts * 10:
        step.feed(raws[start:start + cut])
        start += cut
    step.feed(raws[start:])
    assert step.outcome() == whole
