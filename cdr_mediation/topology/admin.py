"""Create the declared topics (and check existing ones) with the Kafka admin protocol."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from cdr_mediation.topology.topics import TopicSpec

log = logging.getLogger(__name__)


class TopologyMismatch(RuntimeError):
    """An existing topic differs from its declaration in a way that breaks per-key order."""


async def ensure_topics(
    bootstrap: str, specs: tuple[TopicSpec, ...], *, keyed_partitions: int, replication_factor: int,
) -> list[str]:
    """Create missing topics; refuse existing ones whose partition count differs. Returns created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = {spec.name: spec for spec in specs}
        missing = [
            NewTopic(name, num_partitions=spec.partitions(keyed_partitions),
                     replication_factor=replication_factor, topic_configs=spec.config())
            for name, spec in wanted.items() if name not in existing
        ]
        if missing:
            await admin.create_topics(missing, timeout_ms=15000)
            log.info("topics created", extra={"topics": [t.name for t in missing]})
        present = [name for name in wanted if name in existing]
        if present:
            for description in await admin.describe_topics(present):
                name = description["topic"]
                count = len(description["partitions"])
                expected = wanted[name].partitions(keyed_partitions)
                if count != expected:
                    raise TopologyMismatch(
                        f"topic {name} has {count} partitions, the topology declares {expected}; "
                        "changing it would move operators between partitions and break chain order"
                    )
        return [t.name for t in missing]
    finally:
        await admin.close()
