"""Each table partition's RocksDB is opened with bounded memory: two write buffers of the
configured size and a block cache of the configured capacity (not Faust's 64 MB × 3 and 2 GB)."""

from __future__ import annotations

from pathlib import Path

from faust.stores.rocksdb import RocksDBOptions

from cdr_mediation.settings import Settings
from cdr_mediation.tables.store_options import rocksdb_options


def test_a_table_partition_opens_with_the_configured_bounds(tmp_path: Path) -> None:
    settings = Settings(table_write_buffer_mb=4, table_block_cache_mb=12)
    db = RocksDBOptions(**rocksdb_options(settings), use_rocksdict=True).open(tmp_path / "ingest-state-0.db")
    try:
        db[b"op-a/dlr-1"] = b"{}"
        assert db[b"op-a/dlr-1"] == b"{}"
        assert db.property_int_value("rocksdb.block-cache-capacity") == 12 << 20
    finally:
        db.close()


def test_the_defaults_bound_a_worker_holding_every_partition_of_both_tables() -> None:
    options = rocksdb_options(Settings())
    per_partition = options["max_write_buffer_number"] * options["write_buffer_size"] + options["block_cache_size"]
    assert per_partition == 32 << 20
    assert 8 * 2 * per_partition <= 512 << 20  # 8 partitions × 2 tables, active and standby alike
