"""Building a closed day's export from the real PostgreSQL: the right records, a checkpoint that
states them, a TAP file the reference ASN.1 module decodes, and the same bytes every time."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import zipfile

import pytest

from cdr_mediation.agents.export_build import CHECKPOINT_MEMBER, ExportBuildError, build_day_export
from cdr_mediation.codecs.tap.reader import decode_tap_file
from cdr_mediation.domain.checkpoint import Checkpoint
from cdr_mediation.domain.day_close import DayClosed
from cdr_mediation.domain.export_config import EXPORT_CONFIG_FORMAT, load_export_config
from cdr_mediation.domain.merkle import merkle_root
from cdr_mediation.infra.postgres.cdr_store import append_entries
from cdr_mediation.infra.postgres.export_store import ensure_export
from tests.integration.test_rollup_store import chain, new_operator
from tests.unit.codecs.codec_factories import reference_tap

UTC = dt.timezone.utc
DAY = dt.datetime(2026, 11, 3, tzinfo=UTC)


def _config(operator_id: str):
    return load_export_config(json.dumps({
        "format": EXPORT_CONFIG_FORMAT, "recipient": "ATRAA",
        "operators": {operator_id: {"sender": "AFGAW", "time_zone": "+0000", "currency": "EUR",
                                    "currency_exponent": 2, "tap_decimal_places": 2}},
    }).encode())


async def _stored_day(conn):
    """One operator's chain around midnight, in chain order: day D, then D+1 interleaved, then a
    late D record that arrives after the day closed. Returns the entries and the closing record."""
    operator_id = new_operator("exp")
    moments = [DAY + dt.timedelta(hours=h, minutes=m) for h, m in ((9, 0), (13, 30), (22, 15), (23, 59))]
    moments += [DAY + dt.timedelta(days=1, minutes=5), DAY + dt.timedelta(hours=23, minutes=59, seconds=59),
                DAY + dt.timedelta(days=1, hours=2, minutes=1)]  # the last one closes the day
    moments += [DAY + dt.timedelta(hours=12)]  # late: after the close
    pairs, _ = chain(operator_id, moments)
    assert await append_entries(conn, pairs) == len(pairs)
    closing = pairs[6]
    closed = DayClosed(operator_id, DAY.date().isoformat(), "event", closing[0]["chain_seq"], closing[1],
                       closing[0]["done_at"], 1)
    return pairs, closed


async def test_the_file_holds_the_days_records_up_to_the_close_with_a_checkpoint_that_states_them(conn, tmp_path):
    pairs, closed = await _stored_day(conn)
    built = await build_day_export(conn, _config(closed.operator_id), closed, tmp_path)

    # Day D's records with chain_seq <= the closing head: not D+1's, not the late one.
    expected = [pair for pair in pairs[:7] if pair[0]["done_at"].startswith("2026-11-03")]
    assert [e["chain_seq"] for e, _ in expected] == [1, 2, 3, 4, 6]
    checkpoint = built.checkpoint
    assert built.file_name == "CDAFGAWATRAA00001" and checkpoint.file_sequence == 1
    assert (checkpoint.record_count, checkpoint.first_chain_seq, checkpoint.last_chain_seq) == (5, 1, 6)
    assert checkpoint.head_hash == expected[-1][1]
    assert checkpoint.merkle_root == merkle_root([digest for _, digest in expected])
    assert checkpoint.cut_off == "2026-11-04T00:00:00.000Z"
    assert checkpoint.totals["amount_minor"] == sum(e["amount_minor"] for e, _ in expected if e["record_type"] == "CDR")

    with zipfile.ZipFile(built.zip_path) as archive:
        assert archive.namelist() == [built.data_member, CHECKPOINT_MEMBER]
        tap = archive.read(built.data_member)
        assert Checkpoint.from_dict(json.loads(archive.read(CHECKPOINT_MEMBER))) == checkpoint
    assert checkpoint.data_sha256 == hashlib.sha256(tap).hexdigest()
    # The reference GSMA module decodes the file; the project's reader finds it reconciled.
    batch = reference_tap().decode(tap)
    assert batch[0] == "transferBatch"
    assert len(batch[1]["callEventDetails"]) == 5
    view = decode_tap_file(tap)
    assert view.file_sequence_number == 1 and not view.reconciliation_errors()


async def test_building_again_gives_the_same_bytes(conn, tmp_path):
    _, closed = await _stored_day(conn)
    config = _config(closed.operator_id)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = await build_day_export(conn, config, closed, tmp_path / "a")
    second = await build_day_export(conn, config, closed, tmp_path / "b")
    assert first.zip_path.read_bytes() == second.zip_path.read_bytes()
    assert first.zip_sha256 == second.zip_sha256 and first.checkpoint == second.checkpoint


async def test_a_day_without_records_is_an_empty_file_with_the_empty_root(conn, tmp_path):
    _, closed = await _stored_day(conn)
    quiet = dataclasses.replace(closed, day="2026-11-01", day_sequence=1)
    built = await build_day_export(conn, _config(closed.operator_id), quiet, tmp_path)
    assert built.checkpoint.record_count == 0
    assert decode_tap_file(zipfile.ZipFile(built.zip_path).read(built.data_member)).kind == "notification"


async def test_the_next_file_carries_the_late_record_of_a_closed_day(conn, tmp_path):
    """The late D record (chain_seq 8) reached the chain after D's file closed at chain_seq 7:
    D+1's file carries it beside D+1's own records (domain/file_scope.py), so it is exported once."""
    pairs, closed = await _stored_day(conn)
    config = _config(closed.operator_id)
    first = await build_day_export(conn, config, closed, tmp_path)
    await ensure_export(conn, closed, first.file_name)
    more, _ = chain(closed.operator_id, [DAY + dt.timedelta(days=2, hours=2, minutes=1)],
                    head=_head(closed.operator_id, pairs))  # closes D+1
    await append_entries(conn, more)
    entry, digest = more[0]
    next_day = DayClosed(closed.operator_id, "2026-11-04", "event", entry["chain_seq"], digest, entry["done_at"], 2)
    (tmp_path / "next").mkdir()
    second = await build_day_export(conn, config, next_day, tmp_path / "next")
    held = [e["chain_seq"] for e, _ in pairs if e["chain_seq"] in (5, 7, 8)]
    assert held == [5, 7, 8]  # D+1's two records up to the close, and the late D record
    assert (second.checkpoint.record_count, second.checkpoint.first_chain_seq, second.checkpoint.last_chain_seq) == (
        3, 5, 8)
    assert second.checkpoint.merkle_root == merkle_root([pairs[4][1], pairs[6][1], pairs[7][1]])
    assert first.checkpoint.record_count + second.checkpoint.record_count == 8  # every record once

    # Without the earlier file nobody can say what file 3 carries: refused, not guessed.
    with pytest.raises(ExportBuildError, match="earlier closes"):
        await build_day_export(conn, config, dataclasses.replace(next_day, day="2026-11-05", day_sequence=4), tmp_path)


def _head(operator_id: str, pairs):
    from cdr_mediation.domain.chain import ChainHead

    entry, digest = pairs[-1][:2]
    return ChainHead(operator_id, entry["chain_seq"], digest)
