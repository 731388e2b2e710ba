"""Running a Faust worker: topics first, then the app, with our logging left in place."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import faust

from cdr_mediation.settings import Settings
from cdr_mediation.topology.admin import ensure_topics
from cdr_mediation.topology.topics import TopicSpec

log = logging.getLogger(__name__)

# Each pipeline module contributes `register(app, settings)`; the worker composes them.
Registration = Callable[[faust.App, Settings], None]


def prepare_topics(settings: Settings, specs: tuple[TopicSpec, ...]) -> None:
    created = asyncio.run(
        ensure_topics(settings.kafka_bootstrap, specs, keyed_partitions=settings.partitions,
                      replication_factor=settings.replication_factor)
    )
    log.info("topology ready", extra={"created_topics": created})


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
