"""`cdrmed bench soak`: a steady DLR rate through the whole pipeline for minutes or hours.

Starts (or reuses) the local stack, then a namespaced pipeline like `bench ingest` — the bridge
and N workers running every agent (optionally the exporter too) — and publishes synthetic DLRs
to JetStream at `rate` per second until `minutes` have passed. Every minute it prints one JSON
line; at the end it waits until the pipeline has drained and prints a summary line.

What the figures mean (all clocks are this machine's):

- `rate_in`: DLRs JetStream acknowledged during the minute, per second.
- `rate_out`: CDRs committed to PostgreSQL during the minute, per second (the head `chain_seq`
  of each operator: chains are stored contiguously, so the heads add up to the row count).
- `lag_*_s`: end to end, from the DLR's publish (just before it is handed to NATS) to its CDR
  row's `stored_at` (PostgreSQL's `clock_timestamp()` when the row is inserted, a few ms before
  its commit). Measured on a sample — every k-th DLR, about `LAG_SAMPLES_PER_S` a second — whose
  publish times the publisher keeps; a poller looks their rows up by `cdr_id` every
  `POLL_S` seconds. A minute's figures are over the samples found stored during that minute, so a
  stalled pipeline shows as no samples and a growing `oldest_pending_s` (the age of the oldest
  sample not stored yet), never as a good lag. DLRs are not modified to carry the time.
- `rss_mb` / `cpu_s`: per process tree (the bench itself as `publisher`, `bridge`, each worker,
  `nats`, `kafka`, `postgres`): resident memory at the end of the minute, CPU seconds used
  during it. PostgreSQL's figure sums its backends, so its shared buffers count once per
  backend: read its trend, not its level.

The summary fits a least-squares line to each process's RSS (sampled every `RSS_SAMPLE_S`)
over the second half of the run — the first half includes warm-up: caches, RocksDB memtables,
Python's arenas — and calls it growing when the slope exceeds `GROWTH_LIMIT_MB_PER_H` or
`GROWTH_LIMIT_SHARE_PER_H` of its mean, whichever is larger; a second half shorter than
`TREND_MIN_S` is too short to judge. The verdict covers the pipeline's processes; the stack's
servers get a trend too, for information (Tansu keeps every record in memory, so it grows). It also compares the run with the seed's requirement:
500,000 DLR/h for one hour with a P99 lag under 30 s, and nothing lost. The exit status is 1
when DLRs were lost or doubled (stored ≠ published after the drain), else 0: a missed target
is reported in the summary, not in the exit status.

Event time: the synthetic DLRs' `done_at` advance by `spacing_ms` per DLR (20 ms by default), so
at R DLR/s event time runs 0.02·R times faster than the wall clock and hours (and, within an
hour at ~1,400/s, a day) close during a soak, which exercises the rollups and the exporter.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import asyncpg

from cdr_mediation.domain.projection import cdr_id_for
from cdr_mediation.domain.synthetic import synthetic_dlrs
from cdr_mediation.stack.bench_ingest import START, _stack_pids, _stored
from cdr_mediation.stack.manager import Stack
from cdr_mediation.stack.pipeline import LocalPipeline
from cdr_mediation.stack.process_tree import PAGE_MB, TICK_S, tree_counters

SEED_DLR_PER_H = 500_000
SEED_MINUTES = 60
SEED_LAG_P99_S = 30.0
LAG_SAMPLES_PER_S = 20
POLL_S = 2.0
RSS_SAMPLE_S = 10.0
CHUNK_S = 5.0  # publish slices: one NATS connection per slice (LocalPipeline.publish), 12 a minute
GROWTH_LIMIT_MB_PER_H = 10.0
GROWTH_LIMIT_SHARE_PER_H = 0.05
TREND_MIN_S = 600.0
DRAIN_STALL_S = 120.0
STACK_SERVERS = frozenset({"nats", "kafka", "postgres"})


# ---- pure parts (unit-tested) ------------------------------------------------------------------

def percentile(values: Iterable[float], q: float) -> float | None:
    """The nearest-rank percentile (`q` in 0..100): the smallest value with at least q % of the
    values at or below it. None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def slope_per_hour(samples: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) samples, in value per hour; None with fewer than
    two distinct times."""
    if len(samples) < 2:
        return None
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    if spread == 0:
        return None
    return sum((t - mean_t) * (v - mean_v) for t, v in samples) / spread * 3600


def memory_trend(samples: Sequence[tuple[float, float]]) -> dict:
    """Trend of one process's RSS samples (seconds since start, MB) over the second half of the run."""
    if not samples:
        return {"slope_mb_per_h": None, "verdict": "no_samples"}
    half = samples[-1][0] / 2
    late = [s for s in samples if s[0] >= half]
    slope = slope_per_hour(late)
    mean = sum(v for _, v in late) / len(late)
    limit = max(GROWTH_LIMIT_MB_PER_H, GROWTH_LIMIT_SHARE_PER_H * mean)
    if slope is None or late[-1][0] - late[0][0] < TREND_MIN_S:
        verdict = "too_short"
    else:
        verdict = "growing" if slope > limit else "flat"
    return {"slope_mb_per_h": None if slope is None else round(slope, 1), "limit_mb_per_h": round(limit, 1),
            "mean_mb": round(mean, 1), "verdict": verdict}


def minute_line(minute: int, *, seconds: float, published: int, stored: int, lags: Sequence[float],
                oldest_pending_s: float | None, rss_mb: dict[str, float], cpu_s: dict[str, float],
                restarts: dict[str, int]) -> dict:
    """One per-minute JSON object (`published`/`stored`: counts during the minute)."""
    return {
        "minute": minute,
        "rate_in": round(published / seconds, 1),
        "rate_out": round(stored / seconds, 1),
        "lag_p50_s": _round(percentile(lags, 50)),
        "lag_p99_s": _round(percentile(lags, 99)),
        "lag_max_s": _round(max(lags, default=None)),
        "lag_samples": len(lags),
        "oldest_pending_s": _round(oldest_pending_s),
        "rss_mb": {name: round(mb, 1) for name, mb in rss_mb.items()},
        "cpu_s": {name: round(s, 1) for name, s in cpu_s.items()},
        **({"restarts": restarts} if restarts else {}),
    }


def summary_line(*, rate: float, minutes: float, seconds: float, published: int, stored: int, distinct: int,
                 lags: Sequence[float], drain_s: float, rss_samples: dict[str, list[tuple[float, float]]],
                 restarts: dict[str, int]) -> dict:
    """The closing JSON object: totals, lag over the run, memory trends and the verdicts."""
    rate_in = published / seconds if seconds else 0.0
    p99 = percentile(lags, 99)
    trends = {name: memory_trend(samples) for name, samples in rss_samples.items()}
    lossless = stored == distinct == published
    seed_rate = SEED_DLR_PER_H / 3600
    seed = {
        "rate_ok": rate_in >= seed_rate,
        "duration_ok": minutes >= SEED_MINUTES and seconds >= SEED_MINUTES * 60 * 0.99,  # not cut short
        "lag_ok": p99 is not None and p99 < SEED_LAG_P99_S,
        "lossless": lossless,
    }
    return {
        "summary": True,
        "rate": rate,
        "minutes": round(seconds / 60, 2),
        "published": published,
        "stored": stored,
        "lost": published - distinct,
        "duplicates": stored - distinct,
        "rate_in": round(rate_in, 1),
        "x_seed_rate": round(rate_in / seed_rate, 2),
        "lag_p50_s": _round(percentile(lags, 50)),
        "lag_p99_s": _round(p99),
        "lag_max_s": _round(max(lags, default=None)),
        "lag_samples": len(lags),
        "drain_s": round(drain_s, 1),
        "memory": trends,
        "memory_verdict": _memory_verdict(trends),
        "restarts": restarts,
        "seed_target": {"dlr_per_h": SEED_DLR_PER_H, "minutes": SEED_MINUTES, "lag_p99_s": SEED_LAG_P99_S, **seed,
                        "pass": all(seed.values())},
    }


def _memory_verdict(trends: dict[str, dict]) -> str:
    """Over the pipeline's own processes. The stack's servers are listed for information only:
    Tansu (`memory://`) holds every record of every topic in memory, so its RSS grows with the
    data by design, and PostgreSQL's fills its caches."""
    ours = {name: t for name, t in trends.items() if name not in STACK_SERVERS}
    verdicts = {t["verdict"] for t in ours.values()}
    if "growing" in verdicts:
        return "growing: " + ",".join(sorted(name for name, t in ours.items() if t["verdict"] == "growing"))
    return "too_short" if "too_short" in verdicts else "flat"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# ---- process figures ---------------------------------------------------------------------------

def tree_usage(roots: dict[int, str]) -> dict[str, tuple[float, float]]:
    """(CPU seconds since start, RSS MB) of each named root process and its descendants."""
    return {name: ((user + system) * TICK_S, pages * PAGE_MB)
            for name, (user, system, pages) in tree_counters(roots).items()}


# ---- the run -----------------------------------------------------------------------------------

class _Lags:
    """Sampled DLRs: publish time by cdr_id until their row is found, then their lag."""

    def __init__(self) -> None:
        self.pending: dict[str, float] = {}
        self.found: list[float] = []  # lags found since the last minute line
        self.all: list[float] = []

    async def poll(self, conn) -> None:
        if not self.pending:
            return
        rows = await conn.fetch("SELECT cdr_id, extract(epoch FROM stored_at)::float8 AS stored FROM cdr "
                                "WHERE cdr_id = ANY($1::text[])", list(self.pending))
        for row in rows:
            lag = row["stored"] - self.pending.pop(row["cdr_id"])
            self.found.append(lag)
            self.all.append(lag)

    def take_minute(self) -> list[float]:
        found, self.found = self.found, []
        return found

    def oldest_pending(self, now: float) -> float | None:
        return now - min(self.pending.values()) if self.pending else None


async def run_soak(state_dir: Path, *, rate: float, minutes: float, workers: int = 2, partitions: int = 4,
                   operators: int = 8, exporter: bool = False, spacing_ms: int = 20,
                   bridge_linger_ms: int | None = None, bridge_max_batch: int | None = None,
                   emit: Callable[[dict], None] = lambda line: print(json.dumps(line), flush=True)) -> dict:
    stack = Stack(state_dir)
    stack.up()
    pipeline = LocalPipeline(stack.settings_env(), state_dir / "bench", operators=operators, partitions=partitions)
    agents = "ingest,store,rollup,rollup-store" + (",exporter" if exporter else "")
    names = ["bridge", *(f"worker-{n}" for n in range(workers))]
    conn = await asyncpg.connect(pipeline.env["CDR_PG_DSN"])
    restarts: dict[str, int] = {}
    try:
        bridge_env = {name: str(value) for name, value in (("CDR_BRIDGE_LINGER_MS", bridge_linger_ms),
                                                           ("CDR_BRIDGE_MAX_BATCH", bridge_max_batch))
                      if value is not None}
        pipeline.start("bridge", "bridge", **bridge_env)
        for name in names[1:]:
            pipeline.start(name, "worker", CDR_WORKER_AGENTS=agents)
        warmup = [json.dumps(d).encode() for d in synthetic_dlrs(seed=0, start=START, count=200,
                                                                   operators=pipeline.operators,
                                                                   id_prefix=f"{pipeline.namespace}-warmup")]
        await pipeline.publish(warmup)
        await _wait_stored(conn, pipeline, len(warmup), timeout=300, stall_s=None)

        stack_pids = _stack_pids(state_dir)

        def roots() -> dict[int, str]:
            return {os.getpid(): "publisher", **{p.pid: n for n, p in pipeline.processes.items()},
                    **{pid: name for name, pid in stack_pids.items()}}

        lags = _Lags()
        rss_samples: dict[str, list[tuple[float, float]]] = {}
        began_wall, began = time.time(), time.monotonic()
        usage_before = tree_usage(roots())
        stored_before = int(await _stored(conn, pipeline.operators))
        published_in_minute = 0
        published_total = 0
        minute, last_line = 0, began
        interrupted_at: int | None = None

        async def sample_rss() -> None:
            while True:
                now = time.monotonic() - began
                for name, (_, mb) in tree_usage(roots()).items():
                    rss_samples.setdefault(name, []).append((now, mb))
                await asyncio.sleep(RSS_SAMPLE_S)  # a sampling period, not a wait for a condition

        # The sampled rows are read on a connection of their own, one poll at a time: the
        # background poller and the minute lines both poll, and an asyncpg connection serves one
        # query at a time (sharing `conn` failed at minute 14 of a backlogged soak).
        lag_conn, lag_lock = await asyncpg.connect(pipeline.env["CDR_PG_DSN"]), asyncio.Lock()

        async def poll_lags_once() -> None:
            async with lag_lock:
                await lags.poll(lag_conn)

        async def poll_lags() -> None:
            while True:
                await poll_lags_once()
                await asyncio.sleep(POLL_S)  # a polling period

        sampler, poller = asyncio.create_task(sample_rss()), asyncio.create_task(poll_lags())
        every = max(1, round(rate / LAG_SAMPLES_PER_S))
        documents = synthetic_dlrs(seed=1, start=START, spacing_ms=spacing_ms, operators=pipeline.operators,
                                   id_prefix=pipeline.namespace)
        chunks = max(1, round(minutes * 60 / CHUNK_S))
        # SIGTERM / SIGINT end the publishing early, not the run: the pipeline still drains and the
        # summary (with `interrupted_at_minute`) says what was lost. A second signal aborts.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            stop.set()
            loop.remove_signal_handler(signum)

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            for chunk in range(chunks):
                if stop.is_set():
                    interrupted_at = minute + 1
                    break
                # The global schedule, not the previous slice's end: a slice that ran late (a
                # connect, a slow ack) is caught up by the next one instead of drifting.
                due = round(rate * CHUNK_S * (chunk + 1)) - published_total
                window = began + CHUNK_S * (chunk + 1) - time.monotonic()
                batch = [next(documents) for _ in range(due)]
                ids = [d["dlr_id"] for d in batch]
                times = await pipeline.publish(
                    [json.dumps(d).encode() for d in batch], msg_ids=ids,
                    subjects=[pipeline.inbox.subject(d["operator_id"]) for d in batch],
                    rate=due / max(window, CHUNK_S / 2))
                for n in range(-published_total % every, due, every):  # every k-th DLR of the run
                    lags.pending[cdr_id_for(ids[n])] = times[n]
                published_total += due
                published_in_minute += due
                _restart_exited(pipeline, names, agents, restarts)
                if (chunk + 1) % round(60 / CHUNK_S) == 0 or chunk == chunks - 1:
                    await poll_lags_once()
                    stored_now = int(await _stored(conn, pipeline.operators))
                    usage = tree_usage(roots())
                    now = time.monotonic()
                    emit(minute_line(minute + 1, seconds=now - last_line, published=published_in_minute,
                                     stored=stored_now - stored_before, lags=lags.take_minute(),
                                     oldest_pending_s=lags.oldest_pending(time.time()),
                                     rss_mb={n: u[1] for n, u in usage.items()},
                                     # A restarted process starts from 0: never a negative figure.
                                     cpu_s={n: max(0.0, u[0] - usage_before.get(n, (0.0, 0.0))[0])
                                            for n, u in usage.items()},
                                     restarts=dict(restarts)))
                    usage_before, stored_before, published_in_minute = usage, stored_now, 0
                    minute, last_line = minute + 1, now
            seconds = time.monotonic() - began
            drain_began = time.monotonic()
            await _wait_stored(conn, pipeline, len(warmup) + published_total, timeout=max(600.0, minutes * 60),
                               stall_s=DRAIN_STALL_S, check=lambda: _restart_exited(pipeline, names, agents, restarts))
            drain_s = time.monotonic() - drain_began
            await poll_lags_once()  # the samples stored during the drain (the lost ones stay pending)
        finally:
            sampler.cancel()
            poller.cancel()
            await asyncio.gather(sampler, poller, return_exceptions=True)
            await lag_conn.close()
        counts = await conn.fetchrow(
            "SELECT count(*) AS stored, count(DISTINCT cdr_id) AS distinct_ids FROM cdr "
            "WHERE operator_id = ANY($1::text[]) AND dlr_id NOT LIKE $2",
            list(pipeline.operators), f"{pipeline.namespace}-warmup-%")
    finally:
        await conn.close()
        pipeline.stop_all()
    result = summary_line(rate=rate, minutes=minutes, seconds=seconds, published=published_total,
                          stored=counts["stored"], distinct=counts["distinct_ids"], lags=lags.all,
                          drain_s=drain_s, rss_samples=rss_samples, restarts=restarts)
    result["began"] = dt.datetime.fromtimestamp(began_wall, dt.timezone.utc).isoformat(timespec="seconds")
    result["namespace"] = pipeline.namespace
    result["workers"], result["partitions"], result["exporter"] = workers, partitions, exporter
    result["bridge_linger_ms"], result["bridge_max_batch"] = bridge_linger_ms, bridge_max_batch
    result["operators"] = operators
    result["interrupted_at_minute"] = interrupted_at
    emit(result)
    return result


def _restart_exited(pipeline: LocalPipeline, names: list[str], agents: str, restarts: dict[str, int]) -> None:
    """Start again a process that exited, as Kubernetes would (a worker stops itself on an offset
    gap, topology/transport.py); counted in the lines and the summary, never hidden."""
    for name in names:
        process = pipeline.processes[name]
        if process.poll() is not None:
            restarts[name] = restarts.get(name, 0) + 1
            print(json.dumps({"event": "restart", "process": name, "exit_status": process.returncode}),
                  file=sys.stderr, flush=True)
            if name == "bridge":
                pipeline.start(name, "bridge")
            else:
                pipeline.start(name, "worker", CDR_WORKER_AGENTS=agents)


async def _wait_stored(conn, pipeline: LocalPipeline, count: int, *, timeout: float, stall_s: float | None,
                       check: Callable[[], None] = lambda: None) -> None:
    """Until `count` CDRs of the pipeline are stored; gives up after `timeout`, or when the count
    has not moved for `stall_s` (lost records never arrive)."""
    deadline = time.monotonic() + timeout
    last, moved = -1, time.monotonic()
    while (stored := int(await _stored(conn, pipeline.operators))) < count:
        now = time.monotonic()
        if stored != last:
            last, moved = stored, now
        if now > deadline or (stall_s is not None and now - moved > stall_s):
            print(json.dumps({"event": "drain_gave_up", "stored": stored, "expected": count,
                              "logs": str(pipeline.work_dir)}), file=sys.stderr, flush=True)
            return  # the summary counts what is missing
        check()
        await asyncio.sleep(0.5)  # a polling period


def soak_exit_status(result: dict) -> int:
    return 0 if result["lost"] == 0 and result["duplicates"] == 0 else 1


def install_sigterm_as_interrupt() -> None:
    """SIGTERM stops the soak like Ctrl-C: the `finally` blocks stop the pipeline's processes."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
