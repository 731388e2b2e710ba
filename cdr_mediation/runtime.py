"""What every process does first: settings once, JSON logs, the start-up log line, metrics."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

from cdr_mediation.observability.jsonlog import configure_logging
from cdr_mediation.observability.metrics import start_metrics_server
from cdr_mediation.observability.msisdn import MsisdnHasher
from cdr_mediation.observability.tracing import configure_tracing
from cdr_mediation.settings import Settings, SettingsError, StartupRefused, check_worker_startup

log = logging.getLogger("cdr_mediation.runtime")

# Used only where no key is configured (dev/test): references are then stable but not secret,
# which is why prod refuses to start without CDR_MSISDN_HASH_KEY (settings validation).
_DEV_MSISDN_KEY = b"cdr-mediation-dev-only-msisdn-key"


@dataclass(frozen=True)
class Process:
    settings: Settings
    hasher: MsisdnHasher
    metrics_port: int


def start_process(service: str, *, worker: bool, metrics: bool = True) -> Process:
    """Load settings (exit 2 on error), configure logs, refuse bad worker config, serve metrics."""
    try:
        settings = Settings.load()
    except SettingsError as exc:
        print(f"cdrmed {service}: invalid settings: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    key = settings.msisdn_hash_key.get_secret_value().encode() or _DEV_MSISDN_KEY
    hasher = MsisdnHasher(key)
    configure_logging(service=service, level=settings.log_level, hasher=hasher)
    configure_tracing(service=service, otlp_endpoint=settings.trace_otlp_endpoint, trace_file=settings.trace_file,
                      sample_ratio=settings.trace_sample_ratio)
    log.info("starting", extra={"settings": settings.masked()})
    if worker:
        try:
            check_worker_startup(settings)
        except StartupRefused as exc:
            log.error("start-up refused", extra={"reason": str(exc)})
            print(f"cdrmed {service}: {exc}", file=sys.stderr)
            raise SystemExit(3) from None
    port = start_metrics_server(service=service, host=settings.metrics_host, port=settings.metrics_port) if metrics else 0
    return Process(settings=settings, hasher=hasher, metrics_port=port)
