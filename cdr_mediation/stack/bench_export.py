"""`cdrmed bench export`: one day's export file of N records, built, signed and delivered.

What is measured is what the exporter agent runs for a closed day (`agents/exporter.py`),
without its lifecycle bookkeeping (a few audit rows):

* `build_s`: `build_day_export` through the exporter's PostgreSQL sink: the day's rows streamed
  from PostgreSQL into the TAP 3.12 writer, the streaming checkpoint, the deterministic ZIP;
* `sign_s`: `Exporter.sign_zip`: the HSM session, the detached CMS over the ZIP and the raw
  checkpoint signature (SoftHSM2 token of the stack, profile `CDR_EXPORT_SIGNATURE_PROFILE`),
  both checked against the trust anchor, the signature files written;
* `deliver_s`: `Exporter.deliver_parts`: the signature and the ZIP uploaded over SFTP to the
  stack's regulator drop box (the same host: no network in the figure);
* `total_s`: from the first to the last of them; `records_per_s`: records / total_s;
* `peak_rss_mb`: the peak resident memory (VmHWM) of the process that ran those three steps (a
  fresh interpreter started for them, so loading the data does not count) plus that of its
  build helper when the file was large enough for one (`build_processes` 2,
  `CDR_EXPORT_SPLIT_MIN_RECORDS`, agents/export_part.py): the budget of an exporter worker;
* `cpu_s`: the CPU seconds of those processes over the three steps, and `load_avg_1m`: the
  machine's load at the end. On a shared machine the wall-clock figures move with the load;
  `cpu_s` much less.

Before that, `load_s` is the time to make sure the records are in PostgreSQL
(`stack/synthetic_day.py`; `loaded` rows were appended, 0 when an earlier run stored the day). The figures are one JSON
line; files are built in a temporary directory under the state directory and removed after, the
delivered pair stays in the regulator's inbox under a name of this run (a per-run TADIG sender
code in the run's export configuration, so no two runs deliver under one name).

The `cdr` table is append-only: the loaded rows stay in the stack's PostgreSQL (about 0.65 GB
per million records), so large runs belong on a stack of their own (`--state-dir`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import json
import multiprocessing
import os
import resource
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from cdr_mediation.agents.export_build import build_day_export
from cdr_mediation.agents.export_delivery import delivered_detail, delivery_parts
from cdr_mediation.agents.exporter import Exporter
from cdr_mediation.agents.pg_sink import SinkReadiness
from cdr_mediation.domain.cdr import format_utc
from cdr_mediation.domain.day_close import DayClosed
from cdr_mediation.domain.export_config import day_cut_off
from cdr_mediation.observability.jsonlog import configure_logging
from cdr_mediation.observability.msisdn import MsisdnHasher
from cdr_mediation.settings import Settings
from cdr_mediation.stack.manager import Stack
from cdr_mediation.stack.pipeline import export_config_document
from cdr_mediation.stack.synthetic_day import load_day

# The day closes when an event passes its end plus the rollup grace (as in the exporter tests).
_CLOSING_LAG = dt.timedelta(hours=2, minutes=1)


def run_export_bench(state_dir: Path, records: int, *, profile: str = "ed25519") -> dict:
    """Start the stack (idempotent), make sure the day is stored, export it in a fresh process;
    the figures as one JSON-able dict (see the module docstring)."""
    stack = Stack(state_dir)
    stack.up()
    stack_env = stack.settings_env()
    started = time.perf_counter()
    day = asyncio.run(load_day(stack_env["CDR_PG_DSN"], records))
    load_s = time.perf_counter() - started

    work_root = state_dir / "bench-export"
    work_root.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=work_root))
    try:
        config = run_dir / "export-config.json"
        config.write_text(json.dumps(export_config_document([day.operator_id], f"bench-{uuid.uuid4().hex}")))
        env = {**stack_env, "CDR_EXPORT_CONFIG_FILE": str(config), "CDR_EXPORT_DIR": str(run_dir / "exports"),
               "CDR_EXPORT_SIGNATURE_PROFILE": profile}
        closed = DayClosed(day.operator_id, day.day, "event", day.head.chain_seq, day.head.head_hash,
                           format_utc(day_cut_off(day.day) + _CLOSING_LAG), 1)
        # A fresh interpreter (spawn, not fork): its peak RSS is the export's alone.
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            figures = pool.submit(export_closed_day, env, closed.to_dict()).result()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return {"records": records, **figures, "load_s": round(load_s, 3), "loaded": day.loaded,
            "operator_id": day.operator_id}


def peak_rss_kib() -> int:
    """This process's peak resident set size (VmHWM), children included if it has any.

    Not `ru_maxrss`: Linux carries the parent's peak into a child over fork and exec, so a
    process started by a loader that held a million rows would report the loader's memory."""
    with open("/proc/self/status") as status:
        own = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    return max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


def export_closed_day(env: dict[str, str], closed: dict) -> dict:
    """In the fresh process: build, sign and deliver the closed day's file; the figures."""
    settings = Settings.load(env)
    # The stack's key: MSISDN references in logs match the ones its workers write.
    configure_logging(service="bench-export", level=settings.log_level,
                      hasher=MsisdnHasher(settings.msisdn_hash_key.get_secret_value().encode()))
    return asyncio.run(_export(settings, DayClosed.from_dict(closed)))


async def _export(settings: Settings, closed: DayClosed) -> dict:
    exporter = Exporter(settings, SinkReadiness())
    out_dir = exporter.out_dir / closed.operator_id
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_before = usage.ru_utime + usage.ru_stime
        started = time.perf_counter()
        built = await exporter.sink.commit(lambda conn: build_day_export(conn, exporter.config, closed, out_dir, split=exporter.split))
        built_at = time.perf_counter()
        signed = await exporter.sign_zip(closed, built.zip_path, built.zip_sha256)
        signed_at = time.perf_counter()
        if signed is None:
            raise RuntimeError(f"{built.file_name}: the HSM could not sign (see the log)")
        parts = delivery_parts(built.zip_path, zip_sha256=built.zip_sha256, cms_sha256=signed["cms_sha256"])
        outcome = await exporter.deliver_parts(closed, parts)
        delivered_at = time.perf_counter()
    finally:
        await exporter.close()
    if not outcome.delivered:
        raise RuntimeError(f"{built.file_name}: not delivered: {outcome.reason}")
    delivered = delivered_detail(*outcome.receipts)
    if built.checkpoint.record_count != closed.chain_head_seq:
        raise RuntimeError(f"{built.file_name} holds {built.checkpoint.record_count} records, "
                           f"the day {closed.chain_head_seq}")
    total = delivered_at - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "build_s": round(built_at - started, 3),
        "sign_s": round(signed_at - built_at, 3),
        "deliver_s": round(delivered_at - signed_at, 3),
        "total_s": round(total, 3),
        # A large file is built by this process and a helper at once (agents/export_part.py):
        # the budget is their sum.
        "peak_rss_mb": round((peak_rss_kib() + built.helper_peak_rss_kib) / 1024, 1),
        "build_processes": built.parts,
        "records_per_s": round(built.checkpoint.record_count / total),
        # CPU seconds of this process over the three steps (imports and start-up excluded): what
        # the steps cost whatever else the machine runs, which the wall-clock figures depend on.
        "cpu_s": round(usage.ru_utime + usage.ru_stime - cpu_before + built.helper_cpu_s, 3),
        "load_avg_1m": os.getloadavg()[0],
        "zip_bytes": built.zip_path.stat().st_size,
        "data_bytes": (out_dir / built.data_member).stat().st_size,
        "file_name": delivered["remote_name"],
        "zip_sha256": delivered["sha256"],
        "cms_sha256": delivered["signature"]["sha256"],
        "profile": signed["profile"],
        "delivery": delivered["outcome"],
    }
