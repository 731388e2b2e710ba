"""CPU and memory of process trees, read from /proc (Linux): the benchmarks' per-process figures.

A named root counts with all its descendants: PostgreSQL forks a backend per connection, each in
its own session, and the brokers may spawn helpers.
"""

from __future__ import annotations

import os

TICK_S = 1 / os.sysconf("SC_CLK_TCK")
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def tree_counters(roots: dict[int, str]) -> dict[str, tuple[int, int, int]]:
    """(utime ticks, stime ticks, RSS pages) of every live process, summed per named root (pid →
    name) and its descendants. CPU of processes that exited is not counted."""
    parent: dict[int, int] = {}
    counters: dict[int, tuple[int, int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        counters[pid] = (int(fields[11]), int(fields[12]), int(fields[21]))
    totals = {name: (0, 0, 0) for name in roots.values()}
    for pid, (user, system, pages) in counters.items():
        node = pid
        while node > 1 and node not in roots:
            node = parent.get(node, 0)
        if node in roots:
            before = totals[roots[node]]
            totals[roots[node]] = (before[0] + user, before[1] + system, before[2] + pages)
    return totals
