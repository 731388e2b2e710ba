"""Running a Faust worker: topics first, then the app, with our logging left in place."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import faust

from cdr_mediation.settings import Settings
from cdr_mediation.topology.admin import ensure_topics
from cdr_mediation.topology.topics import TableSpec, TopicSpec

log = logging.getLogger(__name__)

# Each pipeline module contributes `register(app, settings)`; the worker composes them.
Registration = Callable[[faust.App, Settings], None]


def prepare_topics(settings: Settings, specs: tuple[TopicSpec, ...]) -> None:
    created = asyncio.run(
        ensure_topics(settings.kafka_bootstrap, specs, keyed_partitions=settings.partitions,
                      replication_factor=settings.replication_factor)
    )
    log.info("topology ready", extra={"created_topics": created})


def build_worker_app(settings: Settings) -> tuple[faust.App, tuple[TableSpec, ...]]:
    """The Faust app with the agents this worker runs (CDR_WORKER_AGENTS), and their tables."""
    from cdr_mediation.agents import cdr_topic, ingest, rollup_store, rollup_web
    from cdr_mediation.agents.pg_sink import SinkReadiness
    from cdr_mediation.domain.pricing import load_snapshot
    from cdr_mediation.tables.ingest import INGEST_TABLE
    from cdr_mediation.tables.rollup import ROLLUP_TABLE
    from cdr_mediation.topology.app import create_app

    app = create_app(settings)
    tables: list[TableSpec] = []
    readiness = SinkReadiness()
    if "ingest" in settings.agents:
        assert settings.pricing_file is not None  # check_worker_startup refused otherwise
        pricing = load_snapshot(settings.pricing_file.read_bytes())
        log.info("pricing snapshot loaded", extra={"pricing_version": pricing.version})
        ingest.register(app, settings, pricing)
        tables.append(INGEST_TABLE)
    if settings.agents & {"store", "rollup"}:
        cdr_topic.register(app, settings, readiness)  # one agent: the store step, then the rollup step
    if "rollup" in settings.agents:
        rollup_web.register(app, settings)  # GET /rollups/open/{operator}, routed to the owner
        tables.append(ROLLUP_TABLE)
    if "rollup-store" in settings.agents:
        rollup_store.register(app, settings, readiness)
    if "exporter" in settings.agents:
        from cdr_mediation.agents import verify_job

        # Verification goes on with exports disabled: chains are evidence whether or not files go out.
        verify_job.register(app, settings)
        if settings.export_enabled:
            from cdr_mediation.agents import exporter

            exporter.register(app, settings, readiness)
        else:
            # Not started at all: closed days wait in Kafka until exports are enabled again.
            log.warning("exporter not started: CDR_EXPORT_ENABLED=false")

    @app.page("/readyz")
    async def ready(web, request):
        ok = readiness.database_ok
        return web.json({"ready": ok, **({"detail": readiness.detail} if not ok else {})}, status=200 if ok else 503)

    return app, tuple(tables)


def run_worker(app: faust.App, settings: Settings) -> None:
    """Block until the worker stops (SIGTERM/SIGINT: finish, commit, leave the group)."""
    worker = faust.Worker(
        app,
        loglevel=settings.log_level,
        override_logging=False,
        redirect_stdouts=False,
        quiet=True,
    )
    # The terminal spinner writes cursor escapes to stdout even when it is not a terminal.
    worker.spinner = None
    worker.execute_from_commandline()
