"""Every Kafka topic of the system, in one place: name, partitions, key, cleanup and retention.

Keyed topics are keyed by `operator_id` and share one partition count, so an operator's DLRs,
CDRs, adjustments and table state live in the same partition number everywhere and no
repartition hop is needed (ENVIRONMENT.md: each Faust hop costs throughput and duplicates).
Topics are created by `ensure_topics` before any worker starts; Faust declares nothing itself
(`topic_allow_declare=False`), and Tansu would otherwise auto-create any topic it is asked
about with 4 partitions.
"""

from __future__ import annotations

import dataclasses
import enum

DAY_MS = 24 * 3600 * 1000


class Cleanup(str, enum.Enum):
    DELETE = "delete"
    COMPACT = "compact"


@dataclasses.dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    value: str
    cleanup: Cleanup
    retention_ms: int | None  # None: keep forever (compacted topics)
    single_partition: bool = False

    def named(self, prefix: str) -> "TopicSpec":
        """The same topic in a namespace (several pipelines sharing one cluster, or tests)."""
        return dataclasses.replace(self, name=prefix + self.name) if prefix else self

    def partitions(self, keyed_partitions: int) -> int:
        return 1 if self.single_partition else keyed_partitions

    def config(self) -> dict[str, str]:
        config = {"cleanup.policy": self.cleanup.value}
        if self.retention_ms is not None:
            config["retention.ms"] = str(self.retention_ms)
        return config


# Source topics. Retention of the DLR topic bounds how far back `cdrmed replay` can rebuild
# state from Kafka alone; older history is rebuilt from PostgreSQL and the S3 archive.
DLR = TopicSpec("dlr.v1", key="operator_id", value="batch of DLR v1 JSON documents (bridge)",
                cleanup=Cleanup.DELETE, retention_ms=35 * DAY_MS)
DLR_DEAD_LETTER = TopicSpec("dlr.dlq.v1", key="operator_id or 'unknown'",
                            value="original bytes + reason (headers)", cleanup=Cleanup.DELETE,
                            retention_ms=400 * DAY_MS)
CDR = TopicSpec("cdr.v1", key="operator_id", value="batch of chained CDR entries with record_hash",
                cleanup=Cleanup.DELETE, retention_ms=35 * DAY_MS)
ADJUSTMENT = TopicSpec("cdr.adjustment.v1", key="operator_id", value="VOID/CORRECT request (outbox)",
                       cleanup=Cleanup.DELETE, retention_ms=400 * DAY_MS)
PRICING_SNAPSHOT = TopicSpec("pricing.snapshot.v1", key="snapshot version", value="pricing snapshot JSON",
                             cleanup=Cleanup.COMPACT, retention_ms=None, single_partition=True)
ROLLUP_CLOSED = TopicSpec("rollup.closed.v1", key="operator_id", value="closed hourly rollup",
                          cleanup=Cleanup.DELETE, retention_ms=400 * DAY_MS)
DAY_CLOSED = TopicSpec("day.closed.v1", key="operator_id", value="operator day closed for export",
                       cleanup=Cleanup.DELETE, retention_ms=400 * DAY_MS)

SOURCE_TOPICS: tuple[TopicSpec, ...] = (
    DLR, DLR_DEAD_LETTER, CDR, ADJUSTMENT, PRICING_SNAPSHOT, ROLLUP_CLOSED, DAY_CLOSED,
)


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """A Faust table; its changelog is compacted and partitioned like the keyed topics."""

    name: str
    key: str
    value: str

    def changelog(self, app_id: str) -> TopicSpec:
        return TopicSpec(f"{app_id}-{self.name}-changelog", key=self.key, value=self.value,
                         cleanup=Cleanup.COMPACT, retention_ms=None)


# Tables are added here by the issues that introduce them (ingest state, rollups, …).
TABLES: tuple[TableSpec, ...] = ()


def all_topics(app_id: str, tables: tuple[TableSpec, ...] = TABLES, *, prefix: str = "") -> tuple[TopicSpec, ...]:
    """Source topics (in the `prefix` namespace) and the changelogs Faust names after `app_id`."""
    return tuple(spec.named(prefix) for spec in SOURCE_TOPICS) + tuple(table.changelog(app_id) for table in tables)
