"""One frozen, validated settings object, read from CDR_* environment variables once at start-up.

Every process builds it with `Settings.load()` in its entry point, logs `masked()` once, and
passes it down; nothing else reads the environment. Secrets are `SecretStr` and never appear in
logs or reprs. An unknown CDR_* variable is an error (a typo in a rollback flag such as
`CDR_EXPORT_ENABLE=false` must not be silently ignored).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "CDR_"
# The seed names this flag without the prefix; both spellings are read (they must agree).
AI_FLAG_UNPREFIXED = "AI_ENABLED"


class SettingsError(ValueError):
    """The environment does not describe a valid configuration; the message lists every problem."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid", case_sensitive=False)

    environment: Literal["dev", "test", "prod"] = "dev"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Kafka (any Kafka-protocol broker: Tansu locally, Apache Kafka in production).
    kafka_bootstrap: str = "127.0.0.1:9092"
    partitions: int = Field(8, ge=1, le=1024, description="partitions of every keyed topic")
    replication_factor: int = Field(1, ge=1, le=7)
    topic_prefix: str = Field("", pattern=r"^[a-z0-9._-]*$", description="namespace for topic names")
    data_dir: Path = Path(".stack/worker-data")
    # Each table partition is its own RocksDB (tables/store_options.py): its memory is at most
    # 2 write buffers + its block cache, per partition held (active and standby).
    table_write_buffer_mb: int = Field(8, ge=1, le=1024, description="RocksDB write buffer (memtable) "
                                                                     "per table partition, MB")
    table_block_cache_mb: int = Field(16, ge=1, le=4096, description="RocksDB block cache per table "
                                                                     "partition, MB")
    worker_web_port: int = Field(6066, ge=0, le=65535)
    # Tansu holds a killed member for the session timeout; 10 s keeps takeovers near 17 s there.
    session_timeout_s: float = Field(10.0, gt=0)
    heartbeat_interval_s: float = Field(1.0, gt=0)

    # Producers that must not duplicate on retry (the outbox relay). Apache Kafka supports it;
    # the local Tansu broker lacks InitProducerId, so `cdrmed stack env` turns it off.
    kafka_idempotent_producer: bool = Field(True, description="use Kafka's idempotent producer where the "
                                                              "project asks for it")
    outbox_poll_interval_s: float = Field(5.0, gt=0, description="how often the outbox relay looks for rows "
                                                                 "besides being woken by NOTIFY at commit")
    outbox_batch: int = Field(500, ge=1, le=100_000, description="outbox rows published per pass")

    worker_agents: str = Field("ingest,store,rollup,rollup-store",
                               pattern=r"^(ingest|store|rollup|rollup-store|exporter)(,(ingest|store|rollup|rollup-store|exporter))*$",
                               description="which agents this worker runs (comma-separated); store and rollup "
                                           "both read the CDR topic and must run in the same workers")
    worker_solo: bool = Field(False, description="this worker is alone in its consumer group (benchmarks, tools): "
                                                 "store and rollup may then run apart")
    rollup_grace_s: int = Field(7200, ge=0, le=7 * 86400,
                                description="how long after its end an hour stays open for late events (event time)")
    pricing_file: Path | None = Field(None, description="pricing snapshot (cdr-mediation.pricing.v1 JSON)")

    app_id: str = Field("cdr-mediation", pattern=r"^[a-z0-9][a-z0-9.-]{0,62}$",
                        description="Faust app id: consumer group and table changelog names")
    nats_url: str = "nats://127.0.0.1:4222"
    nats_stream: str = Field("DLR", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    nats_subject_root: str = Field("dlr.v1", pattern=r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$",
                                   description="DLRs arrive on <root>.<operator_id>")
    bridge_ack_wait_s: float = Field(30.0, gt=0, description="JetStream redelivers unacked DLRs after this")
    bridge_linger_ms: int = Field(50, ge=0, le=5000,
                                  description="how long the bridge gathers DLRs into one batch before forwarding")
    bridge_max_batch: int = Field(1000, ge=1, le=10_000,
                                  description="most DLRs the bridge gathers before forwarding (its JetStream pull "
                                              "batch; four times this may be unacknowledged)")
    pg_dsn: SecretStr = SecretStr("postgresql://cdr_app@127.0.0.1:5432/cdr")

    hsm_module: str = "/usr/lib/softhsm/libsofthsm2.so"
    hsm_token_label: str = "cdr-signing"
    hsm_pin: SecretStr = SecretStr("")
    hsm_softhsm2_conf: str = ""
    # Which token key signs exports (docs/signing.md): Ed25519 (RFC 8419; byte-reproducible) or
    # ECDSA P-256 (openssl cms -verify checks it; the signature value differs per signing).
    export_signature_profile: Literal["ed25519", "ecdsa-p256"] = "ed25519"
    hsm_cert_ed25519: Path | None = Field(None, description="PEM certificate bundle (leaf first) of the token's Ed25519 key")
    hsm_cert_ecdsa_p256: Path | None = Field(None, description="PEM certificate bundle (leaf first) of the token's P-256 key")
    hsm_ca_cert: Path | None = Field(None, description="PEM trust anchor the exporter checks its signatures against")
    hsm_key_ed25519: str = Field("cdr-export-ed25519", description="label of the token's Ed25519 signing key")
    hsm_key_ecdsa_p256: str = Field("cdr-export-p256", description="label of the token's P-256 signing key")
    export_config_file: Path | None = Field(None, description="export configuration (cdr-mediation.export-config.v1 JSON)")
    export_dir: Path | None = Field(None, description="where export files are built (default: <data_dir>/exports)")
    # A file this large is built by two processes, byte-identical (agents/export_part.py): the
    # build is CPU-bound in one interpreter. 0: always one process (e.g. a one-CPU pod).
    export_split_min_records: int = Field(500_000, ge=0, description="export files of at least this many records "
                                                                     "are built by two processes (0: never)")

    # Delivery of signed exports to the regulator (infra/delivery/): its SFTP drop box (key login,
    # strict host key) or its HTTPS endpoint (mutual TLS). Only the chosen channel's settings are
    # required (check_worker_startup); `cdrmed stack env` sets both for the local simulator.
    delivery_method: Literal["sftp", "https"] = Field("sftp", description="how exports reach the regulator")
    sftp_host: str = "127.0.0.1"
    sftp_port: int = Field(22, ge=1, le=65535)
    sftp_user: str = "atra"
    sftp_key_path: Path | None = None
    sftp_known_hosts: Path | None = None
    sftp_remote_dir: str = "inbox"
    https_url: str = Field("", pattern=r"^(https://[^\s/?#]+(/[^\s?#]*)?)?$",
                           description="base URL of the regulator's HTTPS delivery endpoint (https:// only)")
    https_ca_cert: Path | None = Field(None, description="PEM CA bundle the endpoint's server certificate must "
                                                         "chain to; nothing else is trusted")
    https_client_cert: Path | None = Field(None, description="PEM client certificate (chain, leaf first) "
                                                             "presented for mutual TLS")
    https_client_key: Path | None = Field(None, description="PEM private key of the client certificate")
    https_client_key_passphrase: SecretStr = Field(SecretStr(""), description="passphrase of an encrypted "
                                                                              "client key")

    # Following a delivered export up (domain/export_followup.py). The deadline runs from when the
    # day closed in this system, not from the day itself, so a replay of old days is not MANUAL
    # at once; the ACK time-out from the last delivery.
    export_ack_timeout_s: float = Field(6 * 3600, gt=0, description="DELIVERED without an answer this long → "
                                                                       "TIMED_OUT (then delivered again)")
    export_deadline_s: float = Field(48 * 3600, gt=0, description="an export not ACKED this long after its day "
                                                                   "closed goes to MANUAL (alert)")
    export_poll_interval_s: float = Field(60.0, gt=0, description="how often the regulator's answers are fetched "
                                                                  "and time-outs checked")
    export_retry_base_s: float = Field(5.0, gt=0, description="first retry delay of a failed signing or "
                                                              "delivery (doubling, capped at 15 min)")

    # The verifier (agents/verifier.py, docs/verification.md): every exporter worker checks this
    # often whether a verification of all chains and checkpoints is due; one of them runs it.
    chain_verify_interval_s: float = Field(86400.0, gt=0, description="how often all chains and export "
                                                                      "checkpoints are recomputed")

    s3_endpoint: str | None = None
    s3_bucket: str = "cdr-archive"
    s3_region: str = "us-east-1"
    s3_access_key: SecretStr = SecretStr("")
    s3_secret_key: SecretStr = SecretStr("")
    # Archive and cold tier (infra/archive/, docs/archive.md). Retention runs from the data's own
    # cut-off (domain/retention.py), so it is the same on every attempt and every rebuild.
    archive_retention_days: int = Field(2557, ge=1, le=36500,
                                        description="COMPLIANCE retention of archived objects (7 years)")
    hot_window_months: int = Field(13, ge=1, le=1200,
                                   description="whole UTC months of CDRs PostgreSQL keeps before the cold tier")
    cold_segment_max_rows: int = Field(1_000_000, ge=1, le=100_000_000,
                                       description="at most this many chain entries per cold segment file")

    msisdn_hash_key: SecretStr = Field(SecretStr(""), description="HMAC key for MSISDN references in logs")

    # Tracing (observability/tracing.py): context always propagates; spans leave the process only
    # to these sinks. The ratio applies where no caller decided (a DLR without trace context).
    trace_otlp_endpoint: str = Field("", pattern=r"^(https?://\S+)?$",
                                     description="OTLP/HTTP traces endpoint, e.g. http://collector:4318/v1/traces")
    trace_file: Path | None = Field(None, description="also write finished spans here as JSON lines (dev, tests)")
    trace_sample_ratio: float = Field(1.0, ge=0.0, le=1.0, description="share of new traces recorded")

    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(0, ge=0, le=65535, description="0 = an ephemeral port, logged at start")
    portal_host: str = "127.0.0.1"
    portal_port: int = Field(8080, ge=0, le=65535, description="the API, mutual TLS only")
    portal_probe_port: int = Field(8081, ge=0, le=65535, description="/healthz, /readyz, /metrics in clear "
                                                                     "(kubelet, Prometheus)")
    portal_tls_cert: Path | None = Field(None, description="PEM server certificate (chain, leaf first) of the API")
    portal_tls_key: Path | None = Field(None, description="PEM private key of the server certificate")
    portal_client_ca: Path | None = Field(None, description="PEM CA whose client certificates may call the API")
    portal_client_crl: Path | None = Field(None, description="PEM CRL of that CA: revoked certificates are refused")
    worker_urls: str = Field("", pattern=r"^(https?://[^,\s]+(,https?://[^,\s]+)*)?$",
                             description="comma-separated base URLs of the workers' web servers "
                                         "(CDR_WORKER_WEB_PORT) the portal asks, in order, for open rollups")

    # Rollout / rollback flags (DESIGN.md §8).
    export_enabled: bool = True
    adjustment_enabled: bool = True
    # A chain break or checkpoint mismatch halts the operator's exports until a later
    # verification finds the operator intact (docs/verification.md).
    chain_verify_fail_fast: bool = False
    ai_enabled: bool = False
    ai_model_registry_entry: str = ""

    @model_validator(mode="after")
    def _production_needs_secrets(self) -> "Settings":
        if self.environment == "prod" and len(self.msisdn_hash_key.get_secret_value()) < 32:
            raise ValueError("CDR_MSISDN_HASH_KEY must be set (>= 32 characters) in prod")
        return self

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Read and validate; every problem is reported at once as a SettingsError."""
        env = dict(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        known = {name.upper() for name in cls.model_fields}
        unknown = sorted(
            key for key in env if key.upper().startswith(ENV_PREFIX) and key.upper()[len(ENV_PREFIX):] not in known
        )
        if unknown:
            raise SettingsError(f"unknown settings {unknown}; known: {sorted(ENV_PREFIX + k for k in known)}")
        for key, raw in env.items():
            if key.upper().startswith(ENV_PREFIX):
                values[key.upper()[len(ENV_PREFIX):].lower()] = raw
        if AI_FLAG_UNPREFIXED in env:
            unprefixed = env[AI_FLAG_UNPREFIXED]
            if "ai_enabled" in values and values["ai_enabled"].strip().lower() != unprefixed.strip().lower():
                raise SettingsError(f"{AI_FLAG_UNPREFIXED}={unprefixed!r} disagrees with CDR_AI_ENABLED")
            values["ai_enabled"] = unprefixed
        try:
            # Values are passed explicitly so that the environment is read exactly once, here.
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{ENV_PREFIX}{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" if e["loc"] else e["msg"]
                for e in exc.errors()
            )
            raise SettingsError(problems) from None

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, *args, **kwargs):
        # Only explicit values (from `load`): no second, implicit read of the environment.
        return (init_settings,)

    @property
    def agents(self) -> frozenset[str]:
        return frozenset(self.worker_agents.split(","))

    def masked(self) -> dict[str, Any]:
        """Every setting for the start-up log, secrets replaced and DSN passwords hidden."""
        result: dict[str, Any] = {}
        for name, value in self:
            if isinstance(value, SecretStr):
                result[name] = "***" if value.get_secret_value() else ""
            elif isinstance(value, Path):
                result[name] = str(value)
            else:
                result[name] = value
        return result


class StartupRefused(RuntimeError):
    """A worker must not start with this configuration (the message says why and what to do)."""


def check_worker_startup(settings: Settings) -> None:
    """Guards every worker runs before doing anything (seed 002: no unregistered AI)."""
    if settings.ai_enabled and not settings.ai_model_registry_entry.strip():
        raise StartupRefused(
            "AI_ENABLED is true but no model registry entry is configured "
            "(set CDR_AI_MODEL_REGISTRY_ENTRY to the registered model, or set AI_ENABLED=false); "
            "refusing to start"
        )
    if "exporter" in settings.agents and settings.export_enabled:
        missing = [name for name, value in (("CDR_EXPORT_CONFIG_FILE", settings.export_config_file),
                                            ("CDR_HSM_CA_CERT", settings.hsm_ca_cert),
                                            (signing_cert_setting(settings), signing_cert(settings)),
                                            *delivery_settings(settings)) if not value]
        if missing:
            raise StartupRefused(f"the exporter needs {', '.join(missing)} (or CDR_EXPORT_ENABLED=false)")
    if "ingest" in settings.agents and settings.pricing_file is None:
        raise StartupRefused("the ingest agent needs a pricing snapshot: set CDR_PRICING_FILE")
    if ("store" in settings.agents) != ("rollup" in settings.agents) and not settings.worker_solo:
        # Both are steps of the one CDR-topic agent (agents/cdr_topic.py): a worker running only
        # one of them would be assigned CDR partitions the other step then never sees.
        raise StartupRefused("the store and rollup agents read the same topic and must run in the same workers: "
                             "set CDR_WORKER_AGENTS to include both or neither")


def delivery_settings(settings: Settings) -> tuple[tuple[str, Any], ...]:
    """(variable, value) of every setting the chosen delivery channel cannot do without."""
    if settings.delivery_method == "sftp":
        return (("CDR_SFTP_KEY_PATH", settings.sftp_key_path), ("CDR_SFTP_KNOWN_HOSTS", settings.sftp_known_hosts))
    return (("CDR_HTTPS_URL", settings.https_url), ("CDR_HTTPS_CA_CERT", settings.https_ca_cert),
            ("CDR_HTTPS_CLIENT_CERT", settings.https_client_cert), ("CDR_HTTPS_CLIENT_KEY", settings.https_client_key))


def signing_cert_setting(settings: Settings) -> str:
    return "CDR_HSM_CERT_ED25519" if settings.export_signature_profile == "ed25519" else "CDR_HSM_CERT_ECDSA_P256"


def signing_cert(settings: Settings) -> Path | None:
    """The certificate bundle of the key the chosen profile signs with."""
    return settings.hsm_cert_ed25519 if settings.export_signature_profile == "ed25519" else settings.hsm_cert_ecdsa_p256


def signing_key_label(settings: Settings) -> str:
    return settings.hsm_key_ed25519 if settings.export_signature_profile == "ed25519" else settings.hsm_key_ecdsa_p256
