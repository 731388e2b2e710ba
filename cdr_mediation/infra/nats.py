"""NATS JetStream: the durable inbox from dlr-processor (subjects `dlr.v1.<operator_id>`)."""

from __future__ import annotations

import dataclasses

import nats
from nats.js.api import ConsumerConfig, DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

# Redeliveries with the same Nats-Msg-Id (= dlr_id) inside this window are dropped by the server;
# older ones are caught by the ingest agent's dedup.
DUPLICATE_WINDOW_S = 120.0


@dataclasses.dataclass(frozen=True)
class DlrInbox:
    """Where upstream publishes: stream `stream`, subjects `<subject_root>.<operator_id>`."""

    stream: str = "DLR"
    subject_root: str = "dlr.v1"

    def subject(self, operator_id: str) -> str:
        return f"{self.subject_root}.{operator_id}"

    @property
    def wildcard(self) -> str:
        return f"{self.subject_root}.>"


def dlr_stream_config(inbox: DlrInbox, max_age_s: float = 7 * 24 * 3600.0) -> StreamConfig:
    return StreamConfig(
        name=inbox.stream,
        subjects=[inbox.wildcard],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=max_age_s,
        duplicate_window=DUPLICATE_WINDOW_S,
    )


async def connect(url: str, *, name: str):
    return await nats.connect(url, name=name, connect_timeout=5, max_reconnect_attempts=-1)


async def ensure_dlr_stream(js, inbox: DlrInbox) -> None:
    """Create the DLR stream if absent (its subjects and limits are part of the upstream contract)."""
    try:
        await js.stream_info(inbox.stream)
    except NotFoundError:
        await js.add_stream(dlr_stream_config(inbox))


async def ensure_pull_consumer(js, stream: str, config: ConsumerConfig) -> None:
    """Create the durable pull consumer if absent (an existing one is used as it is, as
    `pull_subscribe` does: changing a live consumer's settings is an operator decision)."""
    try:
        await js.consumer_info(stream, config.durable_name)
    except NotFoundError:
        await js.add_consumer(stream, config)
