"""Configuration from `KARMA_*` environment variables (nested with `__`).

Examples: `KARMA_TEMPORAL__ADDRESS=temporal:7233`, `KARMA_KAFKA__BOOTSTRAP_SERVERS=kafka:9092`,
`KARMA_CLICKHOUSE__DSN=clickhouse://default:pw@clickhouse:8123`. Read it through
`get_settings()` inside functions, never at import time.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from karma import names
from karma.breakers import BreakerSettings


class TemporalSettings(BaseModel):
    address: str = "127.0.0.1:7233"
    namespace: str = "default"
    task_queue: str = names.DEFAULT_TASK_QUEUE
    ui_port: int = Field(default=8233, description="Web UI port of the embedded dev server")
    api_key: SecretStr | None = None
    tls: bool = False
    search_attributes: bool = Field(
        default=True,
        description="index actions by KarmaActionType, KarmaState, ... (they must be registered)",
    )
    workflow_sandbox: bool = Field(
        default=False,
        description="run ActionWorkflow in Temporal's sandbox (slower: it re-checks every "
        "activation; Karma's workflow code is deterministic and guarded by replay tests)",
    )


class KafkaTopics(BaseModel):
    requested: str = names.TOPIC_REQUESTED
    progress: str = names.TOPIC_PROGRESS
    result: str = names.TOPIC_RESULT
    dlq: str = names.TOPIC_DLQ
    callbacks: str = Field(
        default=names.TOPIC_CALLBACKS,
        validation_alias=AliasChoices("callbacks", "events"),  # `events`: its former name
        description="callbacks from the systems event-driven actions wait on",
    )

    observations: str = Field(
        default=names.TOPIC_OBSERVATIONS,
        description="what other systems observed (the `observations` table)",
    )
    deviations: str = Field(
        default=names.TOPIC_DEVIATIONS,
        description="deviations from learned baselines, found by the entropy scan",
    )
    predictions: str = Field(
        default=names.TOPIC_PREDICTIONS,
        description="after each observed step: the expected next step and when",
    )
    stream: str = Field(
        default=names.TOPIC_STREAM,
        description="the items streaming actions produce (key: action id; seq in a header)",
    )

    def all(self) -> list[str]:
        return [
            self.requested,
            self.progress,
            self.result,
            self.dlq,
            self.callbacks,
            self.observations,
            self.deviations,
            self.predictions,
            self.stream,
        ]


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "karma"
    topics: KafkaTopics = Field(default_factory=KafkaTopics)
    topic_partitions: int = Field(default=3, ge=1)
    topic_replication_factor: int = Field(default=1, ge=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    request_timeout_s: float = Field(default=10.0, gt=0)
    emit_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="how long an activity waits for Kafka before leaving transitions to the "
        "durable emit path",
    )


class ClickHouseSettings(BaseModel):
    dsn: SecretStr | None = Field(
        default=None,
        description="clickhouse-connect DSN; unset means embedded chdb under the data dir",
    )
    database: str = names.LEDGER_DATABASE


class BridgeSettings(BaseModel):
    consumer_group: str = names.LEDGER_CONSUMER_GROUP
    observations_group: str = Field(
        default=names.OBSERVATIONS_CONSUMER_GROUP,
        description="the consumer group writing `events.normalized` to `observations`",
    )
    batch_max_rows: int = Field(default=1000, ge=1)
    batch_max_seconds: float = Field(default=1.0, gt=0)
    drain_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="on stop, how long the sink may take to write what is on Kafka",
    )


class IngressSettings(BaseModel):
    """The bridge's consumers of requests (`actions.requested`) and callbacks."""

    enabled: bool = True
    requests_group: str = names.INGRESS_REQUESTS_GROUP
    callbacks_group: str = Field(
        default=names.INGRESS_CALLBACKS_GROUP,
        validation_alias=AliasChoices("callbacks_group", "events_group"),
    )
    resolve_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="how long an event naming only an external id may wait for the action "
        "(search attributes are eventually consistent) before it goes to the DLQ as an orphan",
    )
    max_records: int = Field(default=100, ge=1, description="messages fetched per poll")
    max_in_flight: int = Field(
        default=1000,
        ge=1,
        description="messages handled at once per consumer (callbacks waiting for their "
        "action included)",
    )


class LimitsSettings(BaseModel):
    """What Karma accepts from outside, checked before anything is parsed or started."""

    max_message_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="a Kafka message larger than this goes to the DLQ unparsed",
    )
    max_json_depth: int = Field(
        default=64, ge=2, le=1000, description="deeper JSON nesting goes to the DLQ unparsed"
    )
    utf8_only: bool = Field(
        default=True, description="JSON must be UTF-8 (no UTF-16/32 auto-detection)"
    )
    max_payload_bytes: int = Field(
        default=262_144,
        ge=1024,
        le=1_572_864,
        description="the largest encoded request, outputs, state or callback an action "
        "takes into its Temporal history (Temporal refuses blobs over 2 MB)",
    )
    state_compress_bytes: int = Field(
        default=16_384,
        ge=256,
        description="a stateful action's state larger than this (JSON) is kept compressed",
    )
    max_state_bytes: int = Field(
        default=131_072,
        ge=1024,
        le=1_048_576,
        description="a state larger than this even compressed fails as payload_too_large",
    )

    @model_validator(mode="after")
    def _state_sizes(self) -> LimitsSettings:
        if self.state_compress_bytes > self.max_state_bytes:
            raise ValueError(
                "state_compress_bytes must not exceed max_state_bytes (a state that would "
                "fit compressed would be refused)"
            )
        return self


class ApiSettings(BaseModel):
    """The HTTP API (`karma api`, and inside `karma service` and `karma dev`)."""

    enabled: bool = Field(default=True, description="serve the API from `karma dev`")
    host: str = "127.0.0.1"
    port: int = Field(default=8088, ge=0, le=65535)
    heartbeat_s: float = Field(
        default=15.0, gt=0, description="a comment line on a quiet event stream this often"
    )
    auth: bool = Field(
        default=True, description="every /v1 request needs an API key (`karma api-key create`)"
    )
    rate_limit: str = Field(
        default="100/second",
        description="requests per API key (`limits` notation: 100/second, 1000/minute)",
    )
    key: SecretStr | None = Field(
        default=None,
        description="the key local commands send to the API (default: <data_dir>/admin.key, "
        "which the embedded stack writes)",
    )
    keys_file: Path | None = Field(
        default=None, description="the API keys' hashes; default: <data_dir>/api-keys.json"
    )
    allowed_hosts: list[str] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1", "::1", "[::1]"],
        description="Host names the API answers to (besides KARMA_API__HOST); others get 400",
    )

    def url(self, port: int | None = None) -> str:
        """Where a local client reaches the API (a wildcard address means loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return (
            f"http://{f'[{host}]' if ':' in host else host}:{self.port if port is None else port}"
        )


class CodecSettings(BaseModel):
    """Payload encryption (AES-256-GCM) of everything Karma sends through Temporal."""

    keys: SecretStr | None = Field(
        default=None,
        description="`id:base64key,...` (32-byte keys; the first encrypts, any decrypts): "
        "workflow inputs, results, signals and queries reach Temporal as ciphertext",
    )

    @field_validator("keys")
    @classmethod
    def _usable_keyring(cls, keys: SecretStr | None) -> SecretStr | None:
        if keys is not None and keys.get_secret_value().strip():
            from karma.codec import parse_keyring  # it needs these settings' module

            parse_keyring(keys.get_secret_value())  # ValueError: which entry, and why
        return keys

    ui_origins: list[str] = Field(
        default_factory=list,
        description="the Temporal Web UI's origins (scheme://host:port) allowed to call "
        "/codec (CORS); `karma dev` adds its own",
    )
    ui_without_key: bool = Field(
        default=False,
        description="those origins may decode without a key (the dev server's Web UI sends "
        "none); honoured only while the API listens on loopback: `karma dev` sets it",
    )


class MetricsSettings(BaseModel):
    """Prometheus endpoints (karma.metrics): 0 leaves one off."""

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535, description="Karma's metrics (/metrics)")
    sdk_port: int = Field(
        default=0, ge=0, le=65535, description="the Temporal SDK's metrics (its own endpoint)"
    )


class OtelSettings(BaseModel):
    """Tracing (karma.telemetry): where spans go."""

    exporter: Literal["none", "console", "otlp"] = "none"
    service_name: str = "karma"
    otlp_protocol: Literal["http/protobuf", "grpc"] = "http/protobuf"
    otlp_endpoint: str = Field(
        default="",
        description="the collector, e.g. http://localhost:4318 (HTTP) or localhost:4317 "
        "(gRPC); empty: the standard OTEL_EXPORTER_OTLP_* variables or their defaults",
    )


class EntropySettings(BaseModel):
    """The entropy scan: windows, training, and how surprising a deviation must be."""

    scan_window_s: int = Field(default=3600, ge=60, description="one scan window")
    training_window_s: int = Field(
        default=7 * 86400, ge=3600, description="the history a baseline is learned from"
    )
    relearn_every_s: int = Field(
        default=86400, ge=60, description="baselines older than this are learned again"
    )
    context_s: int = Field(
        default=6 * 3600,
        ge=60,
        description="how far back a window's runs are read (their earlier steps, open runs): "
        "a run silent for longer than this is not found overdue",
    )
    grace_s: int = Field(
        default=300,
        ge=0,
        description="a window is scanned once it ended this long ago: observations on their "
        "way through Kafka and the bridge are in by then",
    )
    max_backfill_windows: int = Field(
        default=24 * 31, ge=1, description="at most this many windows in one backfill"
    )
    max_windows_per_scan: int = Field(
        default=48, ge=1, description="a scan catching up covers at most this many windows"
    )
    min_surprise_bits: float = Field(
        default=20.0,
        gt=0,
        description="a deviation is reported at this surprise (-log2 p) or more",
    )
    min_overdue_bits: float = Field(
        default=8.0,
        gt=0,
        description="an overdue run is reported at this surprise: a run that went silent is "
        "at most as surprising as its step ending a run (about log2 of the runs learned from)",
    )
    min_effect_sigmas: float = Field(
        default=0.5,
        ge=0,
        description="a latency shift must also be this large (in robust sigmas) to count",
    )
    min_divergence_bits: float = Field(
        default=0.1,
        ge=0,
        description="a spread or sequence change must also be this large (KL, in bits): "
        "with many samples a trivial difference is significant",
    )
    min_spread_ratio: float = Field(
        default=1.5, ge=1, description="a variance rise counts from this ratio of spreads"
    )
    min_baseline_samples: int = Field(default=30, ge=2)
    min_window_samples: int = Field(default=5, ge=1)
    overdue_factor: float = Field(
        default=2.0, gt=0, description="overdue: a wait this many times the p99.9 gap"
    )
    periodic_max_mad_ratio: float = Field(
        default=0.25, gt=0, description="a process is periodic when MAD/median ≤ this"
    )
    missed_start_sigmas: float = Field(
        default=6.0, gt=0, description="a periodic start is missed this many sigma late"
    )
    schedule: bool = Field(default=True, description="keep a Temporal Schedule that runs the scan")
    schedule_interval_s: int = Field(
        default=300, ge=10, description="how often the Temporal Schedule runs the scan"
    )
    rules_file: Path | None = Field(
        default=None,
        description="rules (YAML) applied to each scan's deviations: `karma rules validate`",
    )
    task_queue: str = Field(
        default="karma-entropy",
        description="served by the process that reads the ledger (karma dev, karma service)",
    )


class GraphSettings(BaseModel):
    """The component graph: where its YAML lives and where runtime values come from."""

    dir: Path = Field(default=Path("graph"), description="holds components/ and params/")
    store: Literal["file", "ssm"] = Field(
        default="file", description="file: <dir>/params/<env>.yaml; ssm: AWS SSM (boto3)"
    )
    ssm_prefix: str = Field(default="/karma", description="<prefix>/<env>/<component>/<name>")


class ResourceSettings(BaseModel):
    check_interval_s: float = Field(
        default=15.0, gt=0, description="how often a worker checks each supplied resource"
    )


class CredentialSettings(BaseModel):
    """Where the credentials executors ask for are kept (`karma credentials`)."""

    file: Path | None = Field(
        default=None,
        description="encrypted credentials (0600); default: <data_dir>/credentials.json",
    )


class Settings(BaseSettings):
    """All of Karma's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="KARMA_", env_nested_delimiter="__", extra="ignore"
    )

    data_dir: Path = Path(".karma")
    secrets_key: SecretStr | None = Field(
        default=None,
        description="Fernet key sealing secret parameters; default: <data_dir>/secrets.key",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="json: one object per line with action_id, trace_id and span_id",
    )
    temporal: TemporalSettings = Field(default_factory=TemporalSettings)
    codec: CodecSettings = Field(default_factory=CodecSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    clickhouse: ClickHouseSettings = Field(default_factory=ClickHouseSettings)
    bridge: BridgeSettings = Field(default_factory=BridgeSettings)
    ingress: IngressSettings = Field(default_factory=IngressSettings)
    services: dict[str, str] = Field(
        default_factory=dict,
        description="base URLs of the services executors call (KARMA_SERVICES__JOBS=http://…)",
    )
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    otel: OtelSettings = Field(default_factory=OtelSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    entropy: EntropySettings = Field(default_factory=EntropySettings)
    graph: GraphSettings = Field(default_factory=GraphSettings)
    breakers: BreakerSettings = Field(default_factory=BreakerSettings)
    resources: ResourceSettings = Field(default_factory=ResourceSettings)
    credentials: CredentialSettings = Field(default_factory=CredentialSettings)

    @property
    def clickhouse_dsn(self) -> str:
        """The configured DSN, or embedded chdb under the data dir."""
        if self.clickhouse.dsn is not None:
            return self.clickhouse.dsn.get_secret_value()
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"


@functools.cache
def get_settings() -> Settings:
    return Settings()
