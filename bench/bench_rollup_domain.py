"""Benchmark of the pure rollup step (`apply_entries`): prints one JSON line.

    .venv/bin/python bench/bench_rollup_domain.py --entries 100000 --batch 500

Builds one operator's real chain (projection + JCS + SHA-256 linking, not timed), with event
times advancing ~1 s per entry and every 50th entry 3 h late (a correction), then times
`apply_entries` over the stream in batches (state carried between calls, as the agent does) and
once more over the whole stream already applied (the duplicate path after a replay).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time

from cdr_mediation.domain.cdr import format_utc
from cdr_mediation.domain.chain import ChainHead, link
from cdr_mediation.domain.dlr import parse_dlr
from cdr_mediation.domain.pricing import load_snapshot
from cdr_mediation.domain.projection import project
from cdr_mediation.domain.rollup import ClockTick, OperatorRollupState, apply_entries

PRICING = {
    "format": "cdr-mediation.pricing.v1",
    "version": "bench",
    "published_at": "2026-01-01T00:00:00Z",
    "operators": {"op-a": {"currency": "EUR", "rates": [
        {"rate_id": "op-a/default/2026", "effective_from": "2026-01-01T00:00:00Z",
         "unit_price_minor": 5, "tax_rate_bp": 2000},
    ]}},
}
STATUSES = ["DELIVERED"] * 7 + ["UNDELIVERED", "EXPIRED", "UNKNOWN"]
START = dt.datetime(2026, 4, 10, tzinfo=dt.timezone.utc)


def stream(count: int) -> list:
    pricing = load_snapshot(json.dumps(PRICING).encode())
    head = ChainHead.genesis("op-a")
    items: list = []
    for n in range(count):
        done = START + dt.timedelta(milliseconds=n * 1000 + n % 7)
        if n % 50 == 49:
            done -= dt.timedelta(hours=3)
        doc = {
            "schema_version": 1, "dlr_id": f"6f1c2a7e-0000-4000-8000-{n:012d}", "message_id": f"msg-{n:010d}",
            "tenant_id": "tenant-1", "operator_id": "op-a", "sender_id": "ACME", "msisdn": f"+49151{n % 10**8:08d}",
            "status": STATUSES[n % len(STATUSES)], "submitted_at": "2026-04-01T00:00:00.000Z",
            "done_at": format_utc(done), "segments": 1 + n % 3, "error_code": None, "smsc_id": "smsc-fra-1",
        }
        linked, digest = link(head, project(parse_dlr(json.dumps(doc).encode()), pricing))
        head = head.advance(linked, digest)
        items.append((linked.to_entry(), digest))
        if n % 1000 == 999:
            items.append(ClockTick("op-a", format_utc(done)))
    return items


def run(count: int, batch_size: int) -> dict:
    items = stream(count)
    batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    state = OperatorRollupState.initial("op-a")
    closes = late = 0
    started = time.perf_counter()
    for batch in batches:
        step = apply_entries(state, batch)
        state = step.new_state
        closes += len(step.closed)
        late += step.late_events
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    replay = apply_entries(state, items)
    replay_seconds = time.perf_counter() - started
    assert replay.new_state == state and replay.duplicates == count
    return {
        "entries": count,
        "batch": batch_size,
        "seconds": round(seconds, 4),
        "entries_per_s": round(count / seconds),
        "closes": closes,
        "late_events": late,
        "replay_entries_per_s": round(count / replay_seconds),
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    print(json.dumps(run(args.entries, args.batch)))


if __name__ == "__main__":
    main()
