"""Where a worker resumes a source partition: decided by its table, not by the committed offset.

A table whose states each record the source offset of the last record applied to them
(`applied_offset`) reflects every record of the partition up to the largest of those offsets:
each processed record writes its key's state with its own offset, and records are processed in
offset order without gaps. The committed consumer offset says only which records were
acknowledged. It runs ahead of the table when a restore missed the newest changelog records, and
resuming there would apply the next records to stale state: a fork of the ingest chain, a gap in
a rollup. Resuming at the table's position re-delivers records the table already reflects, which
every consumer of ours skips or absorbs by key.
"""

from __future__ import annotations

from collections.abc import Iterable

NOTHING_APPLIED = -1


def resume_offset(applied_offsets: Iterable[int]) -> int:
    """The first offset of the partition the table does not reflect (0 for an empty table)."""
    return max(applied_offsets, default=NOTHING_APPLIED) + 1
