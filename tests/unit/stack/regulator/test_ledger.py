"""The ledger of receipts: one receiver sequence number per file, kept across restarts."""

from __future__ import annotations

import json

from cdr_mediation.stack.regulator.ledger import Ledger


def test_ledger_lines_are_append_only_events_replayed_on_restart(tmp_path):
    ledger = Ledger(tmp_path / "receipts.jsonl")
    ledger.receive("a.zip", "a" * 64, 1, channel="sftp", client="atra")
    ledger.redelivered("a.zip")
    ledger.answered("a.zip", answer="ack", response="a.zip.ack", error=None)
    events = [json.loads(line)["event"] for line in (tmp_path / "receipts.jsonl").read_text().splitlines()]
    assert events == ["received", "redelivered", "answered"]
    restarted = Ledger(tmp_path / "receipts.jsonl")
    assert restarted.receipts() == ledger.receipts()
    receipt = restarted.get("a.zip")
    assert (receipt.sequence, receipt.deliveries, receipt.response) == (1, 2, "a.zip.ack")


def test_sequence_numbers_follow_receipts_and_rejections_are_counted(tmp_path):
    ledger = Ledger(tmp_path / "receipts.jsonl")
    for n, name in enumerate(("a.zip", "b.zip", "c.zip")):
        assert ledger.receive(name, f"{n}" * 64, 1, channel="https", client="cdr-exporter").sequence == n + 1
    ledger.answered("a.zip", answer="reject", response="a.zip.rap", error=None)
    ledger.answered("b.zip", answer="ack", response="b.zip.ack", error=None)
    ledger.answered("c.zip", answer="reject", response=None, error="not a TD.57 file name")
    assert ledger.rejections_written() == 1
    assert [r.file for r in ledger.receipts()] == ["a.zip", "b.zip", "c.zip"]
    assert ledger.get("missing.zip") is None


def test_a_returned_file_frees_its_name_and_numbers_keep_counting_across_restarts(tmp_path):
    ledger = Ledger(tmp_path / "receipts.jsonl")
    ledger.receive("a.zip", "a" * 64, 1, channel="sftp", client="atra")
    ledger.answered("a.zip", answer="reject", response="a.zip.rap", error=None)
    assert ledger.returned("a.zip").returned
    corrected = ledger.receive("a.zip", "b" * 64, 1, channel="sftp", client="atra")
    assert (corrected.sequence, corrected.returned) == (2, False)
    ledger.answered("a.zip", answer="reject", response="a.zip.rap", error=None)

    restarted = Ledger(tmp_path / "receipts.jsonl")
    assert restarted.get("a.zip") == ledger.get("a.zip")
    assert restarted.rejections_written() == 2  # RAP numbers never repeat, whatever was returned
    assert restarted.receive("b.zip", "c" * 64, 1, channel="sftp", client="atra").sequence == 3
