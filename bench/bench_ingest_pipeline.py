"""The whole ingest pipeline (NATS → bridge → Kafka → Faust → PostgreSQL) with every knob.

    .venv/bin/python bench/bench_ingest_pipeline.py --dlrs 200000 --state-dir /tmp/stb-perf \
        --ingest-workers 1 --store-workers 1 --partitions 4 [--rate 6000] [--profile-dir DIR]

Same measurement as `cdrmed bench ingest` (cdr_mediation/stack/bench_ingest.py), plus the worker
layout, an offered rate, the bridge linger and py-spy profiles of each pipeline process. Prints
one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from cdr_mediation.stack.bench_ingest import run_ingest_bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dlrs", type=int, default=200_000)
    parser.add_argument("--state-dir", default="/tmp/stb-perf")
    parser.add_argument("--workers", type=int, default=0, help="processes running both agents")
    parser.add_argument("--ingest-workers", type=int, default=0)
    parser.add_argument("--store-workers", type=int, default=0)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rate", type=float, default=None, help="offered DLRs/s (default: as fast as NATS acks)")
    parser.add_argument("--bridge-linger-ms", type=int, default=None)
    parser.add_argument("--profile-dir", type=Path, default=None)
    parser.add_argument("--timeline", type=Path, default=None,
                        help="write [s, forwarded, chained, stored] samples (every 0.5 s) to this JSON file")
    args = parser.parse_args()
    if not (args.workers or args.ingest_workers):
        args.workers = 1
    timeline: list | None = [] if args.timeline else None
    result = asyncio.run(run_ingest_bench(
        Path(args.state_dir), args.dlrs, workers=args.workers, partitions=args.partitions,
        ingest_workers=args.ingest_workers, store_workers=args.store_workers, rate=args.rate,
        bridge_linger_ms=args.bridge_linger_ms, profile_dir=args.profile_dir, timeline=timeline))
    if args.timeline:
        args.timeline.write_text(json.dumps(timeline))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
