"""A Prometheus endpoint per process (prometheus-client's own HTTP server, in a thread)."""

from __future__ import annotations

import logging

from prometheus_client import REGISTRY, CollectorRegistry, Gauge, start_http_server

log = logging.getLogger(__name__)

BUILD_INFO = Gauge("cdr_build_info", "Build and process identity (value is always 1)", ["version", "service"])


def start_metrics_server(*, service: str, host: str, port: int, registry: CollectorRegistry = REGISTRY) -> int:
    """Serve /metrics; returns the bound port (useful when `port` is 0)."""
    from cdr_mediation import __version__

    server, _thread = start_http_server(port, addr=host, registry=registry)
    bound = server.server_address[1]
    BUILD_INFO.labels(version=__version__, service=service).set(1)
    log.info("metrics endpoint listening", extra={"metrics_url": f"http://{host}:{bound}/metrics"})
    return bound
