"""How big each table partition's RocksDB may grow in memory.

Faust opens one RocksDB per table partition a worker holds (active or standby) with its own
defaults: 64 MB write buffers, up to three of them, and a 2 GB block cache of its own. A worker
holding the 3 busy ingest partitions of a soak and their standbys filled a 64 MB buffer in each
(RSS 135 → 323 MB in its first 10 minutes, then in steps as buffers were flushed and refilled:
session 8's soak). Nothing bounded that by configuration. Here every table partition gets at most
two write buffers of `CDR_TABLE_WRITE_BUFFER_MB` and a block cache of `CDR_TABLE_BLOCK_CACHE_MB`,
so a worker's table memory is at most partitions held × tables × (2 × buffer + cache).
"""

from __future__ import annotations

from typing import Any

from cdr_mediation.settings import Settings

WRITE_BUFFERS = 2  # one filling while the other is flushed


def rocksdb_options(settings: Settings) -> dict[str, Any]:
    """The `options=` of a Faust table (passed to `faust.stores.rocksdb.RocksDBOptions`)."""
    return {
        "write_buffer_size": settings.table_write_buffer_mb << 20,
        "max_write_buffer_number": WRITE_BUFFERS,
        "block_cache_size": settings.table_block_cache_mb << 20,
    }
