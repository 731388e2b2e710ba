"""A large export built by two processes (agents/export_part.py) on the real PostgreSQL: the same
ZIP bytes and checkpoint as the one-process build, for a day file and for a file that carries
late records of a closed day; an invalid record in the helper's half is reported as in one pass."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest

from cdr_mediation.agents.export_build import build_day_export
from cdr_mediation.agents.export_part import SplitBuild
from cdr_mediation.codecs.errors import CodecValidationError
from cdr_mediation.codecs.tap.reader import decode_tap_file
from cdr_mediation.domain.cdr import Cdr, DlrStatus, RecordType, format_utc
from cdr_mediation.domain.chain import ChainHead, link
from cdr_mediation.domain.day_close import DayClosed
from cdr_mediation.domain.export_config import EXPORT_CONFIG_FORMAT, load_export_config
from cdr_mediation.infra.postgres.cdr_store import (
    COLUMNS, EXPORT_COLUMNS, append_entries, record_from_export_row, record_from_row)
from cdr_mediation.infra.postgres.export_store import ensure_export
from tests.integration.test_rollup_store import new_operator
from tests.unit.codecs.codec_factories import reference_tap

UTC = dt.timezone.utc
# Lord Howe Island leaves daylight saving (+1100 → +1030) at 15:00 UTC that day: in the later half.
DAY = dt.datetime(2026, 4, 4, tzinfo=UTC)
SMSCS_EARLY = ("smsc-a", "smsc-b")
SMSCS_LATE = ("smsc-c", "smsc-b", "smsc-a", "smsc-d")  # the later half meets them in another order


def _config(operator_id: str):
    # A sender code of the operator's own: file names are unique across operators.
    sender = "".join(chr(65 + int(c, 16)) for c in uuid.uuid5(uuid.NAMESPACE_URL, operator_id).hex[:5])
    return load_export_config(json.dumps({
        "format": EXPORT_CONFIG_FORMAT, "recipient": "ATRAA",
        "operators": {operator_id: {"sender": sender, "time_zone": "Australia/Lord_Howe", "currency": "EUR",
                                    "currency_exponent": 2, "tap_decimal_places": 2}},
    }).encode())


def _entries(operator_id: str, moments: list[dt.datetime], head: ChainHead | None = None, *,
             msisdn_of=lambda n: f"+4915{n:09d}"):
    """Linked entries; SMSCs and submission delays vary, so codes and timestamps are not trivial."""
    head = head or ChainHead.genesis(operator_id)
    pairs = []
    for index, moment in enumerate(moments):
        n = head.chain_seq + 1
        smscs = SMSCS_EARLY if index < len(moments) * 3 // 5 else SMSCS_LATE
        billable = n % 4 != 0
        unlinked = Cdr(
            record_type=RecordType.CDR, cdr_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{operator_id}/{n}")),
            dlr_id=f"dlr-{n}", message_id=f"m-{n}", tenant_id="tenant-a", operator_id=operator_id,
            sender_id=("BANKCO", "SHOP")[n % 2], msisdn=msisdn_of(n),
            status=DlrStatus.DELIVERED if billable else DlrStatus.UNDELIVERED,
            submitted_at=format_utc(moment - dt.timedelta(milliseconds=37 * (n % 5000))), done_at=format_utc(moment),
            segments=1 + n % 3, billable=billable, unit_price_minor=7, amount_minor=7 * (1 + n % 3) if billable else 0,
            tax_minor=1 if billable else 0, currency="EUR", pricing_version="p1",
            error_code=None if billable else "E1", smsc_id=smscs[n % len(smscs)], chain_seq=0, prev_hash="")
        linked, record_hash = link(head, unlinked)
        pairs.append((linked.to_entry(), record_hash))
        head = head.advance(linked, record_hash)
    return pairs, head


def _moments(count: int) -> list[dt.datetime]:
    """`count` moments over the day, every 7th on the next day (interleaved, not in the file)."""
    step = dt.timedelta(hours=24) / count
    return [DAY + step * n + (dt.timedelta(days=1) if n % 7 == 3 else dt.timedelta(0)) for n in range(count)]


async def _store(conn, pairs) -> None:
    for start in range(0, len(pairs), 500):
        await append_entries(conn, pairs[start:start + 500])


def _closed(operator_id: str, pairs, sequence: int, day: str) -> DayClosed:
    entry, digest = pairs[-1]
    return DayClosed(operator_id, day, "event", entry["chain_seq"], digest, entry["done_at"], sequence)


async def _both_ways(conn, stack_env, config, closed, tmp_path, name: str):
    one, two = tmp_path / f"{name}-one", tmp_path / f"{name}-two"
    one.mkdir()
    two.mkdir()
    serial = await build_day_export(conn, config, closed, one)
    split = await build_day_export(conn, config, closed, two, split=SplitBuild(stack_env["CDR_PG_DSN"], 2))
    return serial, split


async def test_two_processes_build_the_bytes_of_one(conn, stack_env, tmp_path):
    operator_id = new_operator("split")
    pairs, head = _entries(operator_id, _moments(1_400))
    first_closing, head = _entries(operator_id, [DAY + dt.timedelta(days=1, hours=2, minutes=1)], head)
    await _store(conn, pairs + first_closing)
    closed = _closed(operator_id, first_closing, 1, DAY.date().isoformat())
    config = _config(operator_id)

    serial, split = await _both_ways(conn, stack_env, config, closed, tmp_path, "day")
    assert (serial.parts, split.parts) == (1, 2)
    assert split.helper_peak_rss_kib > 0 and split.helper_cpu_s > 0
    assert split.zip_path.read_bytes() == serial.zip_path.read_bytes()
    assert split.checkpoint == serial.checkpoint
    day_records = [e for e, _ in pairs if e["done_at"].startswith("2026-04-04")]
    assert split.checkpoint.record_count == len(day_records) == 1_200
    tap = (tmp_path / "day-two" / split.data_member).read_bytes()
    view = decode_tap_file(tap)
    assert not view.reconciliation_errors()
    assert [r.chain_seq for r in view.records] == [e["chain_seq"] for e in day_records]
    # The helper's half met an offset (the DST change) and two SMSCs the first half never met:
    # their codes follow the first half's, in the order met.
    network = reference_tap().decode(tap)[1]["networkInfo"]
    assert [o["utcTimeOffset"] for o in network["utcTimeOffsetInfo"]] == [b"+1100", b"+1030"]
    met = list(dict.fromkeys(e["smsc_id"] for e in day_records))
    assert met[:2] == ["smsc-b", "smsc-a"] and sorted(met[2:]) == ["smsc-c", "smsc-d"]
    assert [e["recEntityId"].decode() for e in network["recEntityInfo"]] == met
    # A chain_seq range under the setting: one process.
    small = await build_day_export(conn, config, closed, tmp_path / "day-one",
                                   split=SplitBuild(stack_env["CDR_PG_DSN"], 10_000))
    assert small.parts == 1 and small.zip_sha256 == serial.zip_sha256

    # The next file carries a late record of the closed day beside its own (the scope query).
    late, head = _entries(operator_id, [DAY + dt.timedelta(hours=15)] + _moments(600)[1:], head)
    assert all(e["done_at"].startswith(("2026-04-04", "2026-04-05")) for e, _ in late)
    await ensure_export(conn, closed, serial.file_name)
    next_moments = [m + dt.timedelta(days=1) for m in _moments(400)]
    own, head = _entries(operator_id, next_moments, head)
    closing, head = _entries(operator_id, [DAY + dt.timedelta(days=2, hours=2, minutes=1)], head)
    await _store(conn, late + own + closing)
    next_closed = _closed(operator_id, closing, 2, "2026-04-05")
    serial, split = await _both_ways(conn, stack_env, config, next_closed, tmp_path, "next")
    assert split.parts == 2
    assert split.zip_path.read_bytes() == serial.zip_path.read_bytes()
    # D+1's records up to its close, and D's records that came after D closed.
    stored = pairs + first_closing + late + own + closing
    held = [e["chain_seq"] for e, _ in stored if e["chain_seq"] <= next_closed.chain_head_seq and (
        e["done_at"].startswith("2026-04-05")
        or (e["done_at"].startswith("2026-04-04") and e["chain_seq"] > closed.chain_head_seq))]
    assert late[0][0]["chain_seq"] in held
    assert (split.checkpoint.record_count, split.checkpoint.first_chain_seq, split.checkpoint.last_chain_seq) == (
        len(held), held[0], held[-1])


async def test_an_invalid_record_in_the_helpers_half_fails_the_build_as_in_one_pass(conn, stack_env, tmp_path):
    operator_id = new_operator("split-bad")
    bad = 180  # chain_seq in the later half: not E.164
    pairs, head = _entries(operator_id, [DAY + dt.timedelta(seconds=60 * n) for n in range(200)],
                           msisdn_of=lambda n: "0049" if n == bad else f"+4915{n:09d}")
    closing, _ = _entries(operator_id, [DAY + dt.timedelta(days=1, hours=2, minutes=1)], head)
    await _store(conn, pairs + closing)
    closed = _closed(operator_id, closing, 1, DAY.date().isoformat())
    config = _config(operator_id)
    errors = []
    for split in (None, SplitBuild(stack_env["CDR_PG_DSN"], 2)):
        with pytest.raises(CodecValidationError) as raised:
            await build_day_export(conn, config, closed, tmp_path, split=split)
        errors.append(raised.value)
    assert errors[0].record_index == errors[1].record_index == bad
    assert str(errors[0]) == str(errors[1])
    assert "0049" not in str(errors[1])  # MSISDNs never in messages
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no part or partial file left


async def test_the_exports_text_timestamps_are_format_utc_of_the_stored_ones(conn):
    """The build reads timestamps rendered by PostgreSQL (`EXPORT_COLUMNS`): the same records as
    formatting the stored datetimes here, on every millisecond boundary case."""
    operator_id = new_operator("split-ts")
    moments = [DAY + dt.timedelta(milliseconds=ms) for ms in (0, 1, 999, 1000, 59_999, 86_399_999)]
    moments += [dt.datetime(2026, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC), dt.datetime(2027, 1, 1, tzinfo=UTC)]
    pairs, _ = _entries(operator_id, moments)
    await _store(conn, pairs)
    where = "WHERE operator_id = $1 ORDER BY chain_seq"
    stored = await conn.fetch(f"SELECT {', '.join(COLUMNS)} FROM cdr {where}", operator_id)
    rendered = await conn.fetch(f"SELECT {', '.join(EXPORT_COLUMNS)} FROM cdr {where}", operator_id)
    assert [record_from_export_row(row) for row in rendered] == [record_from_row(row) for row in stored]
    assert [record_from_export_row(row).done_at for row in rendered] == [e["done_at"] for e, _ in pairs]
