"""`cdrmed bench ingest`: DLRs published to NATS → CDR rows committed in PostgreSQL.

Starts a namespaced pipeline (bridge + Faust workers) on the local stack, warms it up, then
publishes N synthetic DLRs — as fast as JetStream acknowledges them, or paced at `rate` per
second — and waits until every one is a committed row. Lag is per DLR: publish time → the row's
`stored_at` (same machine clock).

Worker layout: `workers` processes run both agents; `ingest_workers` / `store_workers` processes
run one agent each (`CDR_WORKER_AGENTS`), so the two stages use separate cores.

The result also says where the CPU went during the measured phase (`cpu_us_per_dlr`: CPU
microseconds per DLR of each process group — the bench's own publisher, the bridge, each worker,
NATS, Kafka, PostgreSQL — and `machine_busy`, the share of all cores busy including other
tenants), which is what tells a pipeline limit from a starved machine.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import statistics
import time
from pathlib import Path

import asyncpg

from cdr_mediation.domain.synthetic import synthetic_dlrs
from cdr_mediation.stack.manager import Stack
from cdr_mediation.stack.pipeline import LocalPipeline
from cdr_mediation.stack.process import free_port
from cdr_mediation.stack.process_tree import tree_counters

START = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
_TICK = os.sysconf("SC_CLK_TCK")


async def _stored(conn, operators) -> int:
    # Chains are stored contiguously and in order per operator (one partition, one store agent),
    # so the head chain_seq of each operator is its row count: a PK probe per operator instead of
    # counting every row five times a second, which would take CPU from the pipeline measured.
    return await conn.fetchval(
        "SELECT coalesce(sum((SELECT max(chain_seq) FROM cdr WHERE operator_id = o)), 0) "
        "FROM unnest($1::text[]) AS o", list(operators))


async def _wait_for(conn, operators, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (stored := await _stored(conn, operators)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {stored} of {count} CDRs stored after {timeout}s")
        await asyncio.sleep(0.2)


def _tree_cpu_ticks(roots: dict[int, str]) -> dict[str, tuple[int, int]]:
    """(utime, stime) clock ticks of each named root process and its descendants."""
    return {name: (user, system) for name, (user, system, _) in tree_counters(roots).items()}


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class CpuAccount:
    """CPU used by named process trees between `start()` and `stop()` (CPU of processes that
    exited in between is lost; none of the measured ones do)."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = {pid: name for name, pid in roots.items()}

    def start(self) -> None:
        self._before, self._machine_before = _tree_cpu_ticks(self.roots), _machine_ticks()

    def stop(self, dlrs: int) -> dict:
        after, (busy, total) = _tree_cpu_ticks(self.roots), _machine_ticks()
        user = {name: (after[name][0] - self._before[name][0]) / _TICK for name in after}
        system = {name: (after[name][1] - self._before[name][1]) / _TICK for name in after}
        used = {name: user[name] + system[name] for name in after}
        busy -= self._machine_before[0]
        total -= self._machine_before[1]
        cores = os.cpu_count() or 1
        wall = total / cores / _TICK  # jiffies of all cores → seconds
        return {
            "cpu_us_per_dlr": {name: round(seconds / dlrs * 1e6, 1) for name, seconds in used.items()},
            "cpu_us_per_dlr_total": round(sum(used.values()) / dlrs * 1e6, 1),
            # Kernel share of each process's CPU: loopback TCP does the receiver's work too.
            "cpu_sys_share": {name: round(system[name] / used[name], 2) if used[name] else 0.0 for name in used},
            "machine_busy": round(busy / total, 3) if total else None,
            # Cores busy with anything but the processes measured (other tenants of the machine).
            "other_cores": round(busy / total * cores - sum(used.values()) / wall, 2) if total else None,
        }


def _stack_pids(state_dir: Path) -> dict[str, int]:
    pgids = {}
    for name in ("nats", "kafka", "postgres"):
        try:
            pgids[name] = int((state_dir / name / f"{name}.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return pgids


async def run_ingest_bench(state_dir: Path, dlrs: int, *, workers: int = 1, partitions: int = 4,
                           ingest_workers: int = 0, store_workers: int = 0, rate: float | None = None,
                           bridge_linger_ms: int | None = None, timeout: float = 1800,
                           profile_dir: Path | None = None, timeline: list | None = None) -> dict:
    stack = Stack(state_dir)
    stack.up()
    extra_env = {"CDR_BRIDGE_LINGER_MS": str(bridge_linger_ms)} if bridge_linger_ms is not None else None
    pipeline = LocalPipeline(stack.settings_env(), state_dir / "bench", operators=8, partitions=partitions,
                             extra_env=extra_env)
    conn = await asyncpg.connect(pipeline.env["CDR_PG_DSN"])
    try:
        metrics: dict[str, int] = {}

        def start(name: str, command: str, **env: str) -> int:
            metrics[name] = free_port()
            return pipeline.start(name, command, CDR_METRICS_PORT=str(metrics[name]), **env).pid

        groups = {"publisher": os.getpid(), "bridge": start("bridge", "bridge")}
        for n in range(workers):
            groups[f"worker-{n}"] = start(f"worker-{n}", "worker")
        for n in range(ingest_workers):
            groups[f"ingest-{n}"] = start(f"ingest-{n}", "worker", CDR_WORKER_AGENTS="ingest")
        for n in range(store_workers):
            groups[f"store-{n}"] = start(f"store-{n}", "worker", CDR_WORKER_AGENTS="store,rollup,rollup-store")
        # Warm-up: the group has formed and every stage has run once before the clock starts.
        warmup = [json.dumps(d).encode() for d in synthetic_dlrs(seed=0, start=START, count=200,
                                                                   operators=pipeline.operators,
                                                                   id_prefix=f"{pipeline.namespace}-warmup")]
        await pipeline.publish(warmup)
        await _wait_for(conn, pipeline.operators, len(warmup), timeout=180)

        documents = [d for d in synthetic_dlrs(seed=1, start=START, count=dlrs, operators=pipeline.operators,
                                                   id_prefix=pipeline.namespace)]
        ids = [d["dlr_id"] for d in documents]
        payloads = [json.dumps(d).encode() for d in documents]
        subjects = [pipeline.inbox.subject(d["operator_id"]) for d in documents]
        profilers = _start_profilers(profile_dir, groups) if profile_dir else []
        cpu = CpuAccount({**groups, **_stack_pids(state_dir), **{f"py-spy-{n}": p.pid for n, p in enumerate(profilers)}})
        cpu.start()
        began = time.time()
        sampler = asyncio.create_task(_sample_timeline(metrics, began, timeline)) if timeline is not None else None
        published_at = await pipeline.publish(payloads, msg_ids=ids, subjects=subjects, rate=rate)
        await _wait_for(conn, pipeline.operators, len(warmup) + dlrs, timeout=timeout)
        usage = cpu.stop(dlrs)
        if sampler is not None:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        _stop_profilers(profilers)
        rows = await conn.fetch(
            "SELECT dlr_id, extract(epoch FROM stored_at) AS stored FROM cdr WHERE dlr_id = ANY($1::text[])", ids)
    finally:
        await conn.close()
        pipeline.stop_all()
    stored = {r["dlr_id"]: float(r["stored"]) for r in rows}
    if len(stored) != dlrs:
        raise RuntimeError(f"{dlrs - len(stored)} DLRs have no stored CDR")
    lags = sorted(stored[i] - t for i, t in zip(ids, published_at))
    seconds = max(stored.values()) - began
    return {
        "dlrs": dlrs,
        "seconds": round(seconds, 3),
        "dlr_per_s": round(dlrs / seconds, 1),
        "lag_p50_s": round(statistics.median(lags), 3),
        "lag_p99_s": round(lags[min(len(lags) - 1, int(len(lags) * 0.99))], 3),
        "publish_s": round(published_at[-1] - began, 3),
        "workers": workers,
        "ingest_workers": ingest_workers,
        "store_workers": store_workers,
        "partitions": partitions,
        "rate": rate,
        **usage,
    }


# Counters sampled for a timeline: how far each stage got (cumulative DLRs), every half second.
_STAGE_COUNTERS = {
    "forwarded": "cdr_bridge_dlrs_forwarded_total",
    "chained": "cdr_ingest_cdrs_total",
    "stored": "cdr_store_rows_total",
}


async def _sample_timeline(ports: dict[str, int], began: float, samples: list) -> None:
    """Every 0.5 s, append [seconds since `began`, forwarded, chained, stored] (cumulative, summed
    over the processes' Prometheus endpoints): shows which stage falls behind."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        while True:
            counts = dict.fromkeys(_STAGE_COUNTERS, 0.0)
            for port in ports.values():
                try:
                    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                        text = await response.text()
                except aiohttp.ClientError:
                    continue
                for line in text.splitlines():
                    for stage, metric in _STAGE_COUNTERS.items():
                        if line.startswith(metric):
                            counts[stage] += float(line.rsplit(" ", 1)[1])
            samples.append([round(time.time() - began, 1), *(int(v) for v in counts.values())])
            await asyncio.sleep(0.5)


def _start_profilers(profile_dir: Path, groups: dict[str, int]) -> list:
    """py-spy on each pipeline process for the measured phase (raw stacks, one file each)."""
    import shutil
    import subprocess
    import sys

    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    profile_dir.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen([spy, "record", "-p", str(pid), "-f", "raw", "-r", "50", "--nonblocking",
                              "-o", str(profile_dir / f"{name}.raw")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            for name, pid in groups.items() if name != "publisher"]


def _stop_profilers(profilers: list) -> None:
    import signal

    for proc in profilers:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    for proc in profilers:
        proc.wait(30)
