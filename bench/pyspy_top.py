"""Summarise a py-spy raw (collapsed) profile: busy share, top self frames, top inclusive functions.

    .venv/bin/python bench/pyspy_top.py PROFILE.raw [--top 25] [--rate 50 --seconds S]
"""

from __future__ import annotations

import argparse
import collections
import re

_LINE = re.compile(r":\d+\)$")


def frame_name(frame: str) -> str:
    """`func (path:line)` → `func (path)`: aggregate a function over its lines."""
    return _LINE.sub(")", frame)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--rate", type=float, default=None, help="sampling rate (for busy share)")
    parser.add_argument("--seconds", type=float, default=None, help="profile duration (for busy share)")
    parser.add_argument("--match", default=None, help="only inclusive functions matching this regex")
    args = parser.parse_args()
    own: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    total = 0
    with open(args.profile) as handle:
        for line in handle:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            n = int(count)
            frames = [frame_name(f) for f in stack.split(";")]
            total += n
            own[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
    print(f"samples {total}" + (f"  busy {total / (args.rate * args.seconds):.0%}" if args.rate and args.seconds else ""))
    print("-- self --")
    for frame, n in own.most_common(args.top):
        print(f"{n / total:6.1%}  {frame}")
    print("-- inclusive --")
    pattern = re.compile(args.match) if args.match else None
    shown = 0
    for frame, n in inclusive.most_common():
        if pattern and not pattern.search(frame):
            continue
        print(f"{n / total:6.1%}  {frame}")
        shown += 1
        if shown >= args.top:
            break


if __name__ == "__main__":
    main()
