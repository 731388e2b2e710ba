"""`cdrmed bench export` on the real stack: one JSON line with sane figures, the file it names in
the regulator's inbox with the SHA-256 it names and a signature that verifies; a second run uses
the stored day again and delivers under a name of its own. Also the loader's own promises: an
interrupted load is completed, and a chain it did not make is left alone. No timing assertions."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import asyncpg
import pytest

from cdr_mediation.agents.export_build import CHECKPOINT_MEMBER
from cdr_mediation.domain.chain import ChainHead, verify_chain
from cdr_mediation.domain.checkpoint import Checkpoint
from cdr_mediation.infra.cms_verify import load_trust_anchors, verify_detached
from cdr_mediation.infra.postgres.cdr_store import append_entries, append_rows, iter_chain
from cdr_mediation.stack.synthetic_day import DAY, chained_rows, load_day, operator_id_for, projected_entries
from tests.integration.test_rollup_store import chain

RECORDS = 2_000
FIGURES = ("records", "build_s", "sign_s", "deliver_s", "total_s", "peak_rss_mb")


def _bench(repo_root: Path, state_dir: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "cdr_mediation.cli", "bench", "export", "--records", str(RECORDS),
         "--state-dir", str(state_dir)],
        cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    (line,) = result.stdout.splitlines()  # exactly one line: the figures
    return json.loads(line)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bench_export_delivers_one_signed_file_and_prints_its_figures(stack, stack_env, repo_root):
    first = _bench(repo_root, stack.state.root)

    assert set(FIGURES) <= set(first)
    assert first["records"] == RECORDS and first["loaded"] == RECORDS
    assert all(first[key] > 0 for key in ("build_s", "sign_s", "deliver_s", "peak_rss_mb", "cpu_s"))
    assert first["total_s"] == pytest.approx(first["build_s"] + first["sign_s"] + first["deliver_s"], abs=0.01)
    assert first["data_bytes"] > first["zip_bytes"] > 0

    inbox = Path(stack.state.read_manifest()["regulator"]["inbox"])
    delivered, signature = inbox / first["file_name"], inbox / f"{first['file_name']}.p7s"
    assert _sha256(delivered) == first["zip_sha256"] and _sha256(signature) == first["cms_sha256"]
    anchors = load_trust_anchors(Path(stack_env["CDR_HSM_CA_CERT"]).read_bytes())
    verified = verify_detached(signature.read_bytes(), delivered.read_bytes(), anchors)
    assert verified.signing_time == dt.datetime.combine(DAY + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)
    with zipfile.ZipFile(delivered) as archive:
        checkpoint = Checkpoint.from_dict(json.loads(archive.read(CHECKPOINT_MEMBER)))
    assert (checkpoint.operator_id, checkpoint.day) == (first["operator_id"], DAY.isoformat())
    assert (checkpoint.record_count, checkpoint.first_chain_seq, checkpoint.last_chain_seq) == (RECORDS, 1, RECORDS)

    # The cdr table is append-only: the second run finds the day stored and uses it again.
    second = _bench(repo_root, stack.state.root)
    assert (second["records"], second["loaded"], second["operator_id"]) == (RECORDS, 0, first["operator_id"])
    assert second["file_name"] != first["file_name"]
    assert _sha256(inbox / second["file_name"]) == second["zip_sha256"]


async def _stored_chain(dsn: str, operator_id: str):
    conn = await asyncpg.connect(dsn)
    try:
        rows = [row async for row in iter_chain(conn, operator_id)]
    finally:
        await conn.close()
    return verify_chain(operator_id, rows)


async def test_an_interrupted_load_is_completed_into_one_valid_chain(stack_env):
    records, block_size = 1_237, 500
    operator_id = operator_id_for(records)
    # What a load stopped after its first block and part of the second left behind.
    rows, _ = chained_rows(ChainHead.genesis(operator_id),
                           projected_entries(operator_id, records, 0, block_size=block_size)
                           + projected_entries(operator_id, records, 1, block_size=block_size)[:200])
    conn = await asyncpg.connect(stack_env["CDR_PG_DSN"])
    try:
        assert await append_rows(conn, rows) == 700
    finally:
        await conn.close()

    day = await load_day(stack_env["CDR_PG_DSN"], records, helpers=1, block_size=block_size)

    assert (day.operator_id, day.loaded, day.head.chain_seq) == (operator_id, records - 700, records)
    stored = await _stored_chain(stack_env["CDR_PG_DSN"], operator_id)
    assert stored.ok and stored.verified == records and stored.head == day.head


async def test_a_chain_the_loader_did_not_make_is_left_alone(stack_env):
    records = 1_238
    foreign, _ = chain(operator_id_for(records), [dt.datetime(2026, 11, 21, 9, tzinfo=dt.timezone.utc)] * 3)
    conn = await asyncpg.connect(stack_env["CDR_PG_DSN"])
    try:
        await append_entries(conn, foreign)
    finally:
        await conn.close()

    day = await load_day(stack_env["CDR_PG_DSN"], records, helpers=1, block_size=500)

    assert (day.operator_id, day.loaded) == (operator_id_for(records, 2), records)
    assert (await _stored_chain(stack_env["CDR_PG_DSN"], operator_id_for(records))).verified == 3
