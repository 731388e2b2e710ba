"""The cold tier on the real stack: old CDRs leave PostgreSQL for S3 (object lock) only once archived
and verified, come back verified, and `cdr` stays append-only for everyone else.

Each test uses operators of its own (the database and the bucket are shared by the session), and
passes them to the job explicitly.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import sys
import uuid

import asyncpg
import boto3
import pytest
from prometheus_client import REGISTRY

from cdr_mediation.agents.cold_restore import RestoreRefused, restore_to_file, restore_to_table
from cdr_mediation.agents.cold_tier import ColdTierPolicy, build_segment_file, run_cold_pass
from cdr_mediation.agents.verifier import verify_stored_chains
from cdr_mediation.domain.cdr import Cdr, DlrStatus, RecordType, format_utc
from cdr_mediation.domain.chain import ChainHead, link
from cdr_mediation.domain.cold_segment import SegmentRange, segment_line
from cdr_mediation.domain.export_config import day_cut_off
from cdr_mediation.domain.retention import retain_until
from cdr_mediation.infra.archive import ArchivedObject, ArchiveOutcome, ObjectLockArchive, S3Endpoint, archive_store
from cdr_mediation.infra.postgres.cdr_store import append_entries
from cdr_mediation.infra.postgres.cold_segment_store import record_and_release
from cdr_mediation.settings import Settings
from cdr_mediation.stack.postgres import APP_ROLE, OWNER_ROLE
from cdr_mediation.stack.process import free_port

UTC = dt.timezone.utc
NOW = dt.datetime.now(UTC)
OLD = NOW - dt.timedelta(days=3 * 365)  # well before any 13-month hot window
RECENT = NOW - dt.timedelta(days=1)
CDRMED = [sys.executable, "-m", "cdr_mediation.cli"]


def chain(operator_id: str, done_ats: list[dt.datetime]) -> list[tuple[dict, str]]:
    """Linked entries with these done_at values, as the ingest agent emits them."""
    head, pairs = ChainHead.genesis(operator_id), []
    for n, done_at in enumerate(done_ats):
        moment = format_utc(done_at)
        unlinked = Cdr(
            record_type=RecordType.CDR, cdr_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{operator_id}/{n}")),
            dlr_id=f"{operator_id}-dlr-{n}", message_id=f"m-{n}", tenant_id="tenant-a", operator_id=operator_id,
            sender_id="BANKCO", msisdn="+447700900123", status=DlrStatus.DELIVERED, submitted_at=moment,
            done_at=moment, segments=1, billable=True, unit_price_minor=5, amount_minor=5, tax_minor=1,
            currency="EUR", pricing_version="p1", error_code=None, smsc_id="smsc-1", chain_seq=0, prev_hash="")
        linked, record_hash = link(head, unlinked)
        pairs.append((linked.to_entry(), record_hash))
        head = head.advance(linked, record_hash)
    return pairs


def old_then_recent(old: int, recent: int) -> list[dt.datetime]:
    return [OLD + dt.timedelta(minutes=n) for n in range(old)] + [RECENT + dt.timedelta(minutes=n)
                                                                   for n in range(recent)]


@pytest.fixture
def settings(stack_env) -> Settings:
    return Settings.load(stack_env)


@pytest.fixture
def archive(settings) -> ObjectLockArchive:
    return archive_store(settings)


@pytest.fixture
def raw_s3(settings):
    return boto3.client("s3", endpoint_url=settings.s3_endpoint, region_name=settings.s3_region,
                        aws_access_key_id=settings.s3_access_key.get_secret_value(),
                        aws_secret_access_key=settings.s3_secret_key.get_secret_value())


@pytest.fixture
def operator_id() -> str:
    return f"cold-{uuid.uuid4().hex[:10]}"


async def stored_seqs(conn, operator_id: str) -> list[int]:
    return [r["chain_seq"] for r in await conn.fetch(
        "SELECT chain_seq FROM cdr WHERE operator_id = $1 ORDER BY chain_seq", operator_id)]


async def recorded_segments(conn, operator_id: str) -> list[tuple[int, int]]:
    return [(r["first_seq"], r["last_seq"]) for r in await conn.fetch(
        "SELECT first_seq, last_seq FROM cdr_cold_segment WHERE operator_id = $1 ORDER BY first_seq", operator_id)]


def policy(max_rows: int = 1_000_000) -> ColdTierPolicy:
    return ColdTierPolicy(hot_window_months=13, retention_days=2557, max_rows=max_rows)


async def test_old_entries_move_to_s3_under_compliance_retention_and_leave_postgres(conn, archive, raw_s3, settings,
                                                                                   operator_id, tmp_path):
    done_ats = old_then_recent(40, 0) + [RECENT] + old_then_recent(9, 5)  # seq 41 is recent: it holds back 42..
    pairs = chain(operator_id, done_ats)
    await append_entries(conn, pairs)

    report = await run_cold_pass(conn, archive, policy(max_rows=15), now=NOW, work_dir=tmp_path,
                                 operator_ids=[operator_id])

    assert report.ok, report.failures
    assert [(a["first_seq"], a["last_seq"], a["rows_released"]) for a in report.archived] == [
        (1, 15, 15), (16, 30, 15), (31, 40, 10)]
    assert await stored_seqs(conn, operator_id) == list(range(41, 56)), "archived rows are still in PostgreSQL"
    assert await recorded_segments(conn, operator_id) == [(1, 15), (16, 30), (31, 40)]
    expected_until = retain_until(day_cut_off(format_utc(done_ats[39])[:10]), 2557)
    for first, last in [(1, 15), (16, 30), (31, 40)]:
        segment = SegmentRange(operator_id, first, last)
        for key in (segment.segment_key, segment.manifest_key):
            head = raw_s3.head_object(Bucket=settings.s3_bucket, Key=key)
            assert head["ObjectLockMode"] == "COMPLIANCE"
        manifest = json.loads(raw_s3.get_object(Bucket=settings.s3_bucket, Key=segment.manifest_key)["Body"].read())
        assert (manifest["first_seq"], manifest["last_seq"], manifest["record_count"]) == (first, last,
                                                                                          last - first + 1)
        assert manifest["prev_hash"] == pairs[first - 1][0]["prev_hash"]
        assert manifest["head_hash"] == pairs[last - 1][1]
    last_head = raw_s3.head_object(Bucket=settings.s3_bucket, Key=SegmentRange(operator_id, 31, 40).segment_key)
    assert last_head["ObjectLockRetainUntilDate"].astimezone(UTC) == expected_until
    # The hot chain still verifies: it continues the last archived segment's head.
    [verification] = await verify_stored_chains(conn, [operator_id])
    assert verification.ok and verification.head.chain_seq == 55

    again = await run_cold_pass(conn, archive, policy(max_rows=15), now=NOW, work_dir=tmp_path,
                                operator_ids=[operator_id])
    assert again.ok and again.archived == [] and await stored_seqs(conn, operator_id) == list(range(41, 56))


async def test_a_restore_brings_back_exactly_the_archived_entries_verified(conn, archive, operator_id, tmp_path):
    pairs = chain(operator_id, old_then_recent(30, 2))
    await append_entries(conn, pairs)
    await run_cold_pass(conn, archive, policy(max_rows=12), now=NOW, work_dir=tmp_path / "work",
                        operator_ids=[operator_id])
    assert await stored_seqs(conn, operator_id) == [31, 32]
    (tmp_path / "restore").mkdir()

    out = tmp_path / "restored.jsonl"
    count = await restore_to_file(conn, archive, operator_id, 10, 27, out, tmp_path / "restore")
    expected = [segment_line({**entry, "record_hash": record_hash}) for entry, record_hash in pairs[9:27]]
    assert count == 18 and out.read_bytes() == b"".join(expected)

    assert await restore_to_table(conn, archive, operator_id, 1, 30, tmp_path / "restore") == (30, 30)
    assert await restore_to_table(conn, archive, operator_id, 5, 20, tmp_path / "restore") == (16, 0)  # no-op
    restored = await conn.fetch("SELECT chain_seq, record_hash, done_at FROM cdr_restored WHERE operator_id = $1 "
                                "ORDER BY chain_seq", operator_id)
    assert [(r["chain_seq"], r["record_hash"]) for r in restored] == [(n + 1, h) for n, (_, h) in
                                                                      enumerate(pairs[:30])]
    assert format_utc(restored[0]["done_at"]) == pairs[0][0]["done_at"]

    with pytest.raises(RestoreRefused, match="not all in the cold tier"):
        await restore_to_file(conn, archive, operator_id, 25, 31, tmp_path / "too-far.jsonl", tmp_path / "restore")
    assert not (tmp_path / "too-far.jsonl").exists()


async def test_a_rebuilt_segment_is_byte_identical_and_found_already_archived(conn, archive, operator_id, tmp_path):
    """A crash after the upload and before the release: the next pass rebuilds the same bytes."""
    await append_entries(conn, chain(operator_id, old_then_recent(20, 1)))
    segment = SegmentRange(operator_id, 1, 20)
    manifest = await build_segment_file(conn, segment, ChainHead.genesis(operator_id), tmp_path / "first.jsonl.gz")
    until = retain_until(day_cut_off(manifest.done_at_max[:10]), 2557)
    await archive.put_file(segment.segment_key, tmp_path / "first.jsonl.gz", retain_until=until)
    await archive.put_bytes(segment.manifest_key, manifest.to_bytes(), retain_until=until)
    # ... the job dies here: nothing recorded, nothing released.
    assert await stored_seqs(conn, operator_id) == list(range(1, 22))

    report = await run_cold_pass(conn, archive, policy(), now=NOW, work_dir=tmp_path / "work",
                                 operator_ids=[operator_id])
    assert report.ok and [a["outcome"] for a in report.archived] == ["already_archived"]
    assert await stored_seqs(conn, operator_id) == [21]


async def test_with_s3_down_nothing_is_deleted_and_the_failure_is_counted(conn, settings, operator_id, tmp_path):
    await append_entries(conn, chain(operator_id, old_then_recent(25, 1)))
    down = ObjectLockArchive(S3Endpoint(f"http://127.0.0.1:{free_port()}", settings.s3_bucket, settings.s3_region,
                                        "a", "s", connect_timeout_s=1, read_timeout_s=1))
    before = REGISTRY.get_sample_value("cdr_archive_failures_total", {"kind": "unavailable"}) or 0

    report = await run_cold_pass(conn, down, policy(), now=NOW, work_dir=tmp_path, operator_ids=[operator_id])

    assert not report.ok and [f["kind"] for f in report.failures] == ["unavailable"]
    assert REGISTRY.get_sample_value("cdr_archive_failures_total", {"kind": "unavailable"}) == before + 1
    assert await stored_seqs(conn, operator_id) == list(range(1, 27))
    assert await recorded_segments(conn, operator_id) == []
    assert list(tmp_path.iterdir()) == [], "segment files were left behind"


async def test_a_broken_stored_chain_is_not_archived_and_the_bad_seq_is_named(conn, archive, operator_id, tmp_path):
    pairs = chain(operator_id, old_then_recent(12, 1))
    entry, record_hash = pairs[6]
    pairs[6] = ({**entry, "amount_minor": 99}, record_hash)  # seq 7 no longer hashes to its record_hash
    await append_entries(conn, pairs)

    report = await run_cold_pass(conn, archive, policy(), now=NOW, work_dir=tmp_path, operator_ids=[operator_id])

    assert [(f["kind"], f["first_bad_seq"]) for f in report.failures] == [("chain_break", 7)]
    assert "chain_seq 7: hash_mismatch" in report.failures[0]["error"]
    assert await stored_seqs(conn, operator_id) == list(range(1, 14))
    assert await archive.head(SegmentRange(operator_id, 1, 12).segment_key) is None


async def test_cdr_stays_append_only_for_the_app_and_the_owner(conn, owner_conn, archive, operator_id, tmp_path):
    await append_entries(conn, chain(operator_id, old_then_recent(10, 3)))
    await run_cold_pass(conn, archive, policy(), now=NOW, work_dir=tmp_path, operator_ids=[operator_id])
    assert await stored_seqs(conn, operator_id) == [11, 12, 13]

    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute("DELETE FROM cdr WHERE operator_id = $1", operator_id)
    async with conn.transaction():  # forging the release mark does not help the app role
        await conn.execute(f"SET LOCAL cdr.cold_release = '{operator_id}:1:13'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM cdr WHERE operator_id = $1", operator_id)
    with pytest.raises(asyncpg.RaiseError, match="append-only: DELETE refused"):
        await owner_conn.execute("DELETE FROM cdr WHERE operator_id = $1", operator_id)
    # Even if DELETE were ever granted to the app role, the trigger refuses it with a forged mark
    # (only the release function runs as the owner). The grant is rolled back with the test.
    with pytest.raises(asyncpg.RaiseError, match="append-only: DELETE refused"):
        async with owner_conn.transaction():
            await owner_conn.execute(f"GRANT DELETE ON cdr TO {APP_ROLE}")
            await owner_conn.execute(f"SET LOCAL ROLE {APP_ROLE}")
            await owner_conn.execute(f"SET LOCAL cdr.cold_release = '{operator_id}:1:13'")
            await owner_conn.execute("DELETE FROM cdr WHERE operator_id = $1", operator_id)
    await owner_conn.execute(f"SET ROLE {OWNER_ROLE}")
    with pytest.raises(asyncpg.RaiseError, match="append-only: UPDATE refused"):
        await owner_conn.execute("UPDATE cdr SET amount_minor = 0 WHERE operator_id = $1", operator_id)
    with pytest.raises(asyncpg.RaiseError, match="no archived cold segment"):
        await conn.fetchval("SELECT release_cold_segment($1, 11, 13)", operator_id)
    with pytest.raises(asyncpg.RaiseError, match="not the archived ones"):  # released once, never again
        await conn.fetchval("SELECT release_cold_segment($1, 1, 10)", operator_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute("DELETE FROM cdr_cold_segment WHERE operator_id = $1", operator_id)
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await owner_conn.execute("DELETE FROM cdr_cold_segment WHERE operator_id = $1", operator_id)
    assert await stored_seqs(conn, operator_id) == [11, 12, 13]


async def test_a_release_that_does_not_match_the_manifest_removes_nothing(conn, operator_id, tmp_path):
    pairs = chain(operator_id, old_then_recent(10, 1))
    await append_entries(conn, pairs)
    manifest = await build_segment_file(conn, SegmentRange(operator_id, 1, 5), ChainHead.genesis(operator_id),
                                        tmp_path / "s.jsonl.gz")
    evidence = ArchivedObject("k", "0" * 64, 1, None, "COMPLIANCE", NOW + dt.timedelta(days=2557),
                              ArchiveOutcome.STORED)
    wrong_head = dataclasses.replace(manifest, head_hash=pairs[5][1])  # the hash of seq 6, not 5
    with pytest.raises(asyncpg.RaiseError, match="not the archived ones"):
        await record_and_release(conn, wrong_head, wrong_head.to_bytes(), segment=evidence, manifest_object=evidence)
    assert await stored_seqs(conn, operator_id) == list(range(1, 12))
    assert await recorded_segments(conn, operator_id) == [], "the segment was recorded without its release"


def run_cdrmed(env: dict, repo_root, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CDRMED, *args], env=env, cwd=repo_root, capture_output=True, text=True, timeout=180)


async def test_the_commands_archive_verify_and_restore(conn, stack_env, repo_root, operator_id, tmp_path):
    await append_entries(conn, chain(operator_id, old_then_recent(20, 2)))

    dry = run_cdrmed(stack_env, repo_root, "archive", "cold", "--dry-run", "--operator", operator_id)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout.splitlines()[0]) == {"eligible": {"operator_id": operator_id, "first_seq": 1,
                                                                   "last_seq": 20, "record_count": 20}}
    assert len(await stored_seqs(conn, operator_id)) == 22, "a dry run changed something"

    cold = run_cdrmed(stack_env, repo_root, "archive", "cold", "--operator", operator_id)
    assert cold.returncode == 0, cold.stderr
    assert json.loads(cold.stdout.splitlines()[-1])["rows_released"] == 20
    assert await stored_seqs(conn, operator_id) == [21, 22]

    verified = run_cdrmed(stack_env, repo_root, "archive", "verify", "--operator", operator_id)
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout.splitlines()[-1])["ok"] is True

    out = tmp_path / "range.jsonl"
    restored = run_cdrmed(stack_env, repo_root, "archive", "restore", "--operator", operator_id, "--from-seq", "3",
                          "--to-seq", "17", "--out", str(out))
    assert restored.returncode == 0, restored.stderr
    assert [json.loads(line)["chain_seq"] for line in out.read_text().splitlines()] == list(range(3, 18))

    refused = run_cdrmed(stack_env, repo_root, "archive", "restore", "--operator", operator_id, "--from-seq", "15",
                         "--to-seq", "22", "--out", str(tmp_path / "hot.jsonl"))
    assert refused.returncode == 1 and "not all in the cold tier" in refused.stderr


async def test_the_cold_command_with_s3_down_exits_non_zero_and_deletes_nothing(conn, stack_env, repo_root,
                                                                                 operator_id):
    await append_entries(conn, chain(operator_id, old_then_recent(8, 1)))
    env = {**stack_env, "CDR_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    result = run_cdrmed(env, repo_root, "archive", "cold", "--operator", operator_id)
    assert result.returncode == 1
    assert "not archived (unavailable)" in result.stderr and "nothing of it was deleted" in result.stderr
    assert await stored_seqs(conn, operator_id) == list(range(1, 10))
