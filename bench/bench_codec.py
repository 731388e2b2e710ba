"""Benchmark of the streaming TAP 3.12 encoder: prints one JSON line.

    .venv/bin/python bench/bench_codec.py --records 10000000

See cdr_mediation/codecs/bench.py for what is and is not measured.
"""

from __future__ import annotations

import argparse
import json

from cdr_mediation.codecs.bench import run_codec_bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--dir", default=None, help="directory for the temporary file (default: system temp)")
    args = parser.parse_args()
    print(json.dumps(run_codec_bench(args.records, directory=args.dir)))


if __name__ == "__main__":
    main()
