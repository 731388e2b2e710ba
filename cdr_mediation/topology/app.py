"""The Faust application factory: one place for every Faust and Kafka client setting.

Settings that matter for correctness on Tansu and on Apache Kafka alike:
- `cdrkafka://` transport (topology/transport.py): exact table recovery despite Tansu's
  ListOffsets defect.
- `processing_guarantee="at_least_once"`: exactly-once needs InitProducerId, which Tansu lacks;
  exactness comes from guarded table state and idempotent sinks (DESIGN.md §4.5).
- `topic_allow_declare=False`: topics come from topology/topics.py via `ensure_topics`.
- session timeout 10 s / heartbeat 1 s: a SIGKILLed member is replaced in ~17 s on Tansu
  instead of ~90 s; `broker_request_timeout` must be at least the session timeout.
- `recovery_consistency_check=True`: a table that cannot be restored exactly stops the worker.
"""

from __future__ import annotations

import faust

from cdr_mediation.settings import Settings
from cdr_mediation.topology import transport

def create_app(settings: Settings, *, app_id: str | None = None, web_port: int | None = None) -> faust.App:
    transport.register()
    session_timeout = settings.session_timeout_s
    return faust.App(
        app_id or settings.app_id,
        broker=f"{transport.SCHEME}://{settings.kafka_bootstrap}",
        store="rocksdb://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=False,
        processing_guarantee="at_least_once",
        recovery_consistency_check=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=session_timeout,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_request_timeout=max(40.0, session_timeout * 2),
        broker_rebalance_timeout=max(60.0, session_timeout * 3),
        producer_acks=-1,
        # No linger: agents batch explicitly (one record per DLR batch, the dedup entries as one
        # record batch — DESIGN.md §10) and then wait for the acks before writing state, so a
        # linger only adds its length to every batch (measured: 5 ms linger, ~6.5 ms per ack
        # round trip instead of ~1 ms, 18 % less ingest throughput). Sends issued without an
        # await in between still share a request: the sender runs only when the agent yields.
        producer_linger=0.0,
        # A record batch may hold a whole DLR batch's dedup entries (~1,000 × ~210 bytes; the
        # ingest table view sends them as one batch). aiokafka sends one batch per partition per
        # request, so with the 16 KiB default they would trickle out over a dozen round trips.
        # Stays below the 1 MB request / message size limits of Kafka's defaults. Multi-record
        # batches are also what trips Tansu's ListOffsets; the transport above makes that safe.
        producer_max_batch_size=512 * 1024,
        # One standby per table partition: a worker taking over after a kill starts warm.
        table_standby_replicas=1,
        web_enabled=True,
        web_bind=settings.metrics_host,
        web_host=settings.metrics_host,
        web_port=settings.worker_web_port if web_port is None else web_port,
        # Faust must not install its own log handlers over our JSON ones.
        logging_config=None,
        worker_redirect_stdouts=False,
    )
