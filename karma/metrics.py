"""Prometheus metrics of Karma's processes (prometheus_client), served on
`KARMA_METRICS__PORT` by the worker, the bridge, `karma service` and `karma dev`; the
Temporal SDK's own metrics (workflow and activity task latencies, polls, slots) on
`KARMA_METRICS__SDK_PORT`.

Counts of actions come from the ledger sink, which writes each transition once: a
transition published twice is counted once.
"""

from __future__ import annotations

import functools
import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from karma.settings import MetricsSettings

log = logging.getLogger(__name__)

SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)

ACTIONS_STARTED = Counter(
    "karma_actions_started", "Actions that started, by type (from the ledger)", ["type"]
)
ACTIONS_ENDED = Counter(
    "karma_actions_ended",
    "Actions that ended, by type and terminal state (from the ledger)",
    ["type", "state"],
)
TRANSITIONS_STORED = Counter(
    "karma_ledger_transitions", "Transitions written to the ledger, by event type", ["event_type"]
)
ATTEMPTS = Histogram(
    "karma_attempt_duration_seconds",
    "Attempts of executor methods, by action type, method and outcome (ok or error)",
    ["type", "method", "outcome"],
    buckets=SECONDS,
)
EMIT_LATENCY = Histogram(
    "karma_emit_latency_seconds",
    "From a transition's time to Kafka's acknowledgement of it",
    buckets=SECONDS,
)
SINK_BATCH = Histogram(
    "karma_sink_batch_records",
    "Records per batch a sink committed",
    ["sink"],
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
)
SINK_LAG = Gauge(
    "karma_sink_lag_records",
    "Records on the sink's partitions not read yet (as of its last fetch)",
    ["sink"],
)
BREAKER_TRANSITIONS = Counter(
    "karma_breaker_transitions",
    "Circuit breaker state changes, by target and the state entered",
    ["target", "to"],
)
BREAKER_STATE = Gauge(
    "karma_breaker_state", "1 for each target's current breaker state", ["target", "state"]
)
INGRESS = Counter(
    "karma_ingress_requests",
    "Requests from actions.requested, by outcome (started, duplicate)",
    ["outcome"],
)
DEAD_LETTERS = Counter("karma_dead_letters", "Messages sent to actions.dlq, by stage", ["stage"])


def serve(settings: MetricsSettings) -> int | None:
    """Serve Karma's metrics on `settings.port` (once per process); the port, or None when
    off (port 0)."""
    if not settings.port:
        return None
    _serve(settings.host, settings.port)
    return settings.port


@functools.cache
def _serve(host: str, port: int) -> None:
    start_http_server(port, addr=host)
    log.info("Prometheus metrics on http://%s:%d/metrics", host, port)
