"""Table writes that are in Kafka before the agent moves on (DESIGN.md §4.5).

Through `table[key] = value` a changelog record is only queued: Faust commits source offsets
after a `producer.flush()` that gives up on its buffer after 0.1 s (faust/transport/producer.py
`flush_atmost`), so under load an offset can be committed while the state it covers is still
unsent, and a SIGKILL then loses state whose source event is never redelivered. State that must
be exact is therefore written here and awaited: the agent takes its next event only after Kafka
acknowledged the record.
"""

from __future__ import annotations

from typing import Any


async def write_acknowledged(table, partition: int | None, key: str, value: Any) -> None:
    """Set `key` in the table locally and in its changelog partition; return once Kafka acked it.

    `partition` is the source event's partition (the table is co-partitioned with its source
    topic, as Faust's own writes are); without one the write goes through the table API."""
    if partition is None:
        table[key] = value
        return
    table.data[key] = value
    await table.send_changelog(partition, key, value)
