"""NATS JetStream: the durable inbox from dlr-processor (subjects `dlr.v1.<operator_id>`)."""

from __future__ import annotations

import nats
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

DLR_STREAM = "DLR"
DLR_SUBJECT_PREFIX = "dlr.v1"
# Redeliveries with the same Nats-Msg-Id (= dlr_id) inside this window are dropped by the server;
# older ones are caught by the ingest agent's dedup.
DUPLICATE_WINDOW_S = 120.0


def dlr_subject(operator_id: str) -> str:
    return f"{DLR_SUBJECT_PREFIX}.{operator_id}"


def dlr_stream_config(max_age_s: float = 7 * 24 * 3600.0) -> StreamConfig:
    return StreamConfig(
        name=DLR_STREAM,
        subjects=[f"{DLR_SUBJECT_PREFIX}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=max_age_s,
        duplicate_window=DUPLICATE_WINDOW_S,
    )


async def connect(url: str, *, name: str):
    return await nats.connect(url, name=name, connect_timeout=5, max_reconnect_attempts=-1)


async def ensure_dlr_stream(js) -> None:
    """Create the DLR stream if absent (its subjects and limits are part of the upstream contract)."""
    try:
        await js.stream_info(DLR_STREAM)
    except NotFoundError:
        await js.add_stream(dlr_stream_config())
