"""The ClickHouse schema of the action ledger: every column declared once, and numbered
migrations derived from the declarations.

`action_events` holds every transition once: the sink skips event ids it has already
written, and ReplacingMergeTree on (action_id, seq) — i.e. on event_id — collapses any
duplicate that still slips in (two sinks during a rebalance). `action_state_current` keeps
the latest state per action, fed by a materialized view. `schema_migrations` records which
migrations a ledger has had, so `karma setup` and the bridge bring an older ledger up to
date (in order, each once; every statement is idempotent, so two processes migrating at
once do no harm).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge.entropy_schema import entropy_tables
from bridge.graph_store import graph_tables
from karma import fingerprint, names
from karma.envelope import Envelope, Transition
from karma.errors import FieldError, ValidationError
from karma.lifecycle import TERMINAL_STATES, EventType
from karma.telemetry import TRACE_TAG, is_trace_id

MAX_ATTEMPT = 2**16 - 1  # UInt16
TABLE_MIGRATIONS = "schema_migrations"


@dataclass(frozen=True)
class KafkaPosition:
    topic: str
    partition: int
    offset: int


Fill = Callable[[Transition, KafkaPosition], Any]


@dataclass(frozen=True)
class Column:
    """One column of `action_events`: its type, how a transition fills it (None: the
    server's DEFAULT does), the migration that added it, and how rows written before that
    get their value."""

    name: str
    type: str
    fill: Fill | None
    default: str = ""
    comment: str = ""
    since: int = 1
    backfill: str = ""

    def ddl(self) -> str:
        text = f"{self.name} {self.type}"
        if self.default:
            text += f" DEFAULT {self.default}"
        if self.comment:
            text += f" COMMENT '{self.comment}'"
        return text


def _error(event: Transition) -> dict[str, Any]:
    error = event.attrs.get("error") or {}
    if not isinstance(error, dict):
        raise ValidationError([FieldError(field="attrs.error", reason="must be an object")])
    return error


def _attempt(event: Transition) -> int:
    attempt = event.attrs.get("attempt") or 0
    if not isinstance(attempt, int) or not 0 <= attempt <= MAX_ATTEMPT:
        reason = f"must be an integer from 0 to {MAX_ATTEMPT}, got {str(attempt)[:40]!r}"
        raise ValidationError([FieldError(field="attrs.attempt", reason=reason)])
    return attempt


def _duration(event: Transition) -> int:
    duration = event.attrs.get("duration_ms") or 0
    if not isinstance(duration, int):
        reason = f"must be a whole number of milliseconds, got {str(duration)[:40]!r}"
        raise ValidationError([FieldError(field="attrs.duration_ms", reason=reason)])
    # Older versions could record a few negative ms (worker and server clocks differ).
    return min(max(duration, 0), 2**63 - 1)


def _trace_id(event: Transition) -> str:
    trace_id = event.tags.get(TRACE_TAG, "")
    return trace_id if is_trace_id(trace_id) else ""


def _state(event: Transition) -> str:
    state = event.event_type.state
    return state.value if state is not None else ""


ACTION_EVENTS: tuple[Column, ...] = (
    Column("event_id", "String", lambda e, p: e.event_id),
    Column("action_id", "String", lambda e, p: e.action_id),
    Column("seq", "UInt32", lambda e, p: e.seq),
    Column("ts", "DateTime64(3, 'UTC')", lambda e, p: e.ts),
    Column("event_type", "LowCardinality(String)", lambda e, p: e.event_type.value),
    Column(
        "state",
        "LowCardinality(String)",
        lambda e, p: _state(e),
        comment="state after this event; empty for progress",
    ),
    Column(
        "action_type",
        "LowCardinality(String)",
        lambda e, p: e.tags.get("action", e.attrs.get("command", "")),
    ),
    Column("entity_id", "String", lambda e, p: e.entity_id),
    Column("correlation_id", "String", lambda e, p: e.correlation_id),
    Column("idempotency_key", "String", lambda e, p: e.idempotency_key),
    Column("tenant", "LowCardinality(String)", lambda e, p: e.tags.get("tenant", "")),
    Column("priority", "LowCardinality(String)", lambda e, p: e.tags.get("priority", "")),
    Column("attempt", "UInt16", lambda e, p: _attempt(e)),
    Column("error_type", "LowCardinality(String)", lambda e, p: str(_error(e).get("type", ""))),
    Column("error_message", "String", lambda e, p: str(_error(e).get("message", ""))),
    Column("tags", "Map(String, String)", lambda e, p: e.tags),
    Column(
        "attrs",
        "String",
        lambda e, p: json.dumps(e.attrs, separators=(",", ":"), sort_keys=True),
        comment="JSON; secrets are redacted before they reach Kafka",
    ),
    Column("source_system", "LowCardinality(String)", lambda e, p: e.source.system),
    Column("kafka_topic", "LowCardinality(String)", lambda e, p: p.topic),
    Column("kafka_partition", "Int32", lambda e, p: p.partition),
    Column("kafka_offset", "Int64", lambda e, p: p.offset),
    Column("ingested_at", "DateTime64(3, 'UTC')", None, default="now64(3)"),
    Column(
        "duration_ms",
        "UInt64",
        lambda e, p: _duration(e),
        comment="from the start to this terminal transition",
        since=2,
        backfill="JSONExtractUInt(attrs, 'duration_ms')",
    ),
    Column(
        "error_fingerprint",
        "String",
        None,
        default=fingerprint.sql_expression("error_message", 1),
        comment="the error message with its variable parts replaced (karma.fingerprint)",
        since=4,
        backfill=fingerprint.sql_expression("error_message", 1),
    ),
    Column(
        "fingerprint_version",
        "UInt8",
        None,
        default=fingerprint.version_expression("error_message", 1),
        comment="the version of the rules that made error_fingerprint; 0: no error",
        since=4,
        backfill=fingerprint.version_expression("error_message", 1),
    ),
    Column(
        "trace_id",
        "String",
        lambda e, p: _trace_id(e),
        comment="the OpenTelemetry trace of the action (its request span); empty: untraced",
        since=5,
    ),
)

INSERTED = tuple(c for c in ACTION_EVENTS if c.fill is not None)
INSERT_COLUMNS = tuple(c.name for c in INSERTED)


def ledger_row(event: Transition, position: KafkaPosition) -> list[Any]:
    """One `action_events` row, in INSERT_COLUMNS order.

    Raises:
        karma.errors.ValidationError: a value the ledger's columns cannot hold.
    """
    return [c.fill(event, position) for c in INSERTED if c.fill is not None]


def _first_version(database: str) -> list[str]:
    events = f"{database}.{names.TABLE_ACTION_EVENTS}"
    current = f"{database}.{names.TABLE_ACTION_STATE_CURRENT}"
    columns = ",\n            ".join(c.ddl() for c in ACTION_EVENTS if c.since == 1)
    return [
        f"""
        CREATE TABLE IF NOT EXISTS {events} (
            {columns}
        )
        ENGINE = ReplacingMergeTree(ingested_at)
        PARTITION BY toYYYYMM(ts)
        ORDER BY (action_id, seq)
        """,
        f"""
        CREATE TABLE IF NOT EXISTS {current} (
            action_id String,
            last_seq UInt32,
            state LowCardinality(String),
            action_type LowCardinality(String),
            tenant LowCardinality(String),
            entity_id String,
            correlation_id String,
            attempt UInt16,
            error_type LowCardinality(String),
            updated_at DateTime64(3, 'UTC')
        )
        ENGINE = ReplacingMergeTree(last_seq)
        ORDER BY action_id
        """,
        f"""
        CREATE MATERIALIZED VIEW IF NOT EXISTS {current}_mv TO {current} AS
        SELECT action_id, seq AS last_seq, state, action_type, tenant, entity_id,
               correlation_id, attempt, error_type, ts AS updated_at
        FROM {events}
        WHERE state != ''
        """,
    ]


def _added_columns(version: int) -> Callable[[str], list[str]]:
    def statements(database: str) -> list[str]:
        events = f"{database}.{names.TABLE_ACTION_EVENTS}"
        added = [c for c in ACTION_EVENTS if c.since == version]
        out = [f"ALTER TABLE {events} ADD COLUMN IF NOT EXISTS {c.ddl()}" for c in added]
        out += [
            f"ALTER TABLE {events} UPDATE {c.name} = {c.backfill} WHERE 1 "
            "SETTINGS mutations_sync = 1"
            for c in added
            if c.backfill
        ]
        return out

    return statements


def _observation_duration(event: Envelope) -> int | None:
    duration = event.attrs.get("duration_ms")
    return None if duration is None else round(duration)


OBSERVATION_COLUMNS: tuple[tuple[str, Callable[[Envelope, KafkaPosition], Any]], ...] = (
    ("event_id", lambda e, p: e.event_id),
    ("ts", lambda e, p: e.ts),
    ("event_type", lambda e, p: e.event_type),
    ("entity_id", lambda e, p: e.entity_id),
    ("correlation_id", lambda e, p: e.correlation_id),
    ("step", lambda e, p: e.attrs.get("step") or ""),
    ("status", lambda e, p: e.attrs.get("status") or ""),
    ("duration_ms", lambda e, p: _observation_duration(e)),
    ("source_system", lambda e, p: e.source.system),
    ("tags", lambda e, p: e.tags),
    ("attrs", lambda e, p: json.dumps(e.attrs, separators=(",", ":"), sort_keys=True)),
    ("kafka_topic", lambda e, p: p.topic),
    ("kafka_partition", lambda e, p: p.partition),
    ("kafka_offset", lambda e, p: p.offset),
)
OBSERVATION_INSERT_COLUMNS = tuple(name for name, _ in OBSERVATION_COLUMNS)


def observation_row(event: Envelope, position: KafkaPosition) -> list[Any]:
    """One `observations` row, in OBSERVATION_INSERT_COLUMNS order."""
    return [fill(event, position) for _, fill in OBSERVATION_COLUMNS]


def _observations_table(database: str) -> list[str]:
    table = f"{database}.{names.TABLE_OBSERVATIONS}"
    return [
        f"""
        CREATE TABLE IF NOT EXISTS {table} (
            event_id String,
            ts DateTime64(3, 'UTC'),
            event_type LowCardinality(String),
            entity_id String,
            correlation_id String,
            step LowCardinality(String) COMMENT 'attrs.step: the step of a process run',
            status LowCardinality(String) COMMENT 'attrs.status: the step outcome',
            duration_ms Nullable(UInt64) COMMENT 'attrs.duration_ms, when the source knows it',
            source_system LowCardinality(String),
            tags Map(String, String),
            attrs String COMMENT 'JSON',
            kafka_topic LowCardinality(String),
            kafka_partition Int32,
            kafka_offset Int64,
            ingested_at DateTime64(3, 'UTC') DEFAULT now64(3),
            INDEX by_correlation correlation_id TYPE bloom_filter GRANULARITY 4,
            INDEX by_event_id event_id TYPE bloom_filter GRANULARITY 4
        )
        ENGINE = ReplacingMergeTree(ingested_at)
        PARTITION BY toYYYYMM(ts)
        ORDER BY (entity_id, ts, event_id)
        """,
    ]


_TERMINAL = "(" + ", ".join(f"'{s.value}'" for s in sorted(TERMINAL_STATES)) + ")"


def _per_action(events: str) -> str:
    """What one block of `action_events` rows says about each of its actions, in the
    columns of `action_outcomes`. Every aggregate is idempotent (min, max, distinct seqs):
    a transition arriving twice changes nothing. (The inner names keep the aggregates'
    aliases, which are the source's column names, from standing for those columns.)"""
    ended = f"_state IN {_TERMINAL}"
    return f"""
        SELECT
            _action_id AS action_id,
            max(_action_type) AS action_type,
            max(_tenant) AS tenant,
            max(_entity_id) AS entity_id,
            max(_correlation_id) AS correlation_id,
            minOrNullIf(_ts, _event_type = '{EventType.REQUESTED.value}') AS requested_at,
            minOrNullIf(_ts, _event_type = '{EventType.ACCEPTED.value}') AS accepted_at,
            minOrNullIf(_ts, _event_type = '{EventType.STARTED.value}') AS started_at,
            minOrNullIf(_ts, {ended}) AS ended_at,
            maxIf(_state, {ended}) AS state,
            maxIf(_error_type, {ended}) AS error_type,
            maxIf(_error_message, {ended}) AS error_message,
            maxIf(_error_fingerprint, {ended}) AS error_fingerprint,
            maxIf(_fingerprint_version, {ended}) AS fingerprint_version,
            max(_attempt) AS attempts,
            groupUniqArrayIf(_seq, _event_type = '{EventType.RETRYING.value}') AS retry_seqs,
            groupUniqArrayIf(_seq, _event_type = '{EventType.WAITING.value}') AS wait_seqs,
            groupUniqArrayIf(
                _seq,
                _event_type = '{EventType.STEP_COMPENSATED.value}' AND _step_outcome != 'failed'
            ) AS compensated_step_seqs,
            max(_event_type = '{EventType.COMPENSATED.value}') AS compensated,
            maxIf(_duration_ms, {ended}) AS duration_ms
        FROM (
            SELECT
                action_id AS _action_id, action_type AS _action_type, tenant AS _tenant,
                entity_id AS _entity_id, correlation_id AS _correlation_id, ts AS _ts,
                seq AS _seq, event_type AS _event_type, state AS _state,
                error_type AS _error_type,
                substringUTF8(error_message, 1, {fingerprint.MAX_CHARS}) AS _error_message,
                error_fingerprint AS _error_fingerprint,
                fingerprint_version AS _fingerprint_version, attempt AS _attempt,
                duration_ms AS _duration_ms,
                JSONExtractString(attrs, 'outcome') AS _step_outcome
            FROM {events}
        )
        GROUP BY _action_id
    """


def _outcomes(database: str) -> list[str]:
    events = f"{database}.{names.TABLE_ACTION_EVENTS}"
    outcomes = f"{database}.{names.TABLE_ACTION_OUTCOMES}"
    ended = f"{database}.{names.VIEW_ENDED_ACTIONS}"
    at = "SimpleAggregateFunction(min, Nullable(DateTime64(3, 'UTC')))"
    seqs = "SimpleAggregateFunction(groupUniqArrayArray, Array(UInt32))"
    return [
        f"""
        CREATE TABLE IF NOT EXISTS {outcomes} (
            action_id String,
            action_type SimpleAggregateFunction(max, String),
            tenant SimpleAggregateFunction(max, String),
            entity_id SimpleAggregateFunction(max, String),
            correlation_id SimpleAggregateFunction(max, String),
            requested_at {at},
            accepted_at {at},
            started_at {at},
            ended_at {at},
            state SimpleAggregateFunction(max, String) COMMENT 'terminal state; empty: running',
            error_type SimpleAggregateFunction(max, String),
            error_message SimpleAggregateFunction(max, String),
            error_fingerprint SimpleAggregateFunction(max, String),
            fingerprint_version SimpleAggregateFunction(max, UInt8),
            attempts SimpleAggregateFunction(max, UInt16),
            retry_seqs {seqs},
            wait_seqs {seqs},
            compensated_step_seqs {seqs},
            compensated SimpleAggregateFunction(max, UInt8),
            duration_ms SimpleAggregateFunction(max, UInt64)
        )
        ENGINE = AggregatingMergeTree
        ORDER BY action_id
        """,
        f"""
        CREATE MATERIALIZED VIEW IF NOT EXISTS {outcomes}_mv TO {outcomes} AS
        {_per_action(events)}
        """,
        # Actions already in the ledger (idempotent, like the view's inserts).
        f"INSERT INTO {outcomes} {_per_action(events)}",
        f"""
        CREATE VIEW IF NOT EXISTS {ended} AS
        SELECT
            action_id, action_type, tenant, entity_id, correlation_id,
            requested_at, accepted_at, started_at, ended_at, state,
            if(compensated = 1 AND state = 'FAILED', 'COMPENSATED', state) AS outcome,
            error_type, error_message, error_fingerprint, fingerprint_version, attempts,
            length(retry_seqs) AS retries,
            length(wait_seqs) AS waits,
            length(compensated_step_seqs) AS compensated_steps,
            duration_ms,
            dateDiff('millisecond', requested_at, accepted_at) AS time_to_accept_ms,
            dateDiff('millisecond', requested_at, started_at) AS time_to_start_ms,
            dateDiff('millisecond', requested_at, ended_at) AS time_to_resolve_ms
        FROM {outcomes} FINAL
        WHERE ended_at IS NOT NULL
        """,
    ]


def _analytics(database: str) -> list[str]:
    return _added_columns(4)(database) + _outcomes(database)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: Callable[[str], list[str]]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "action_events, action_state_current and its view", _first_version),
    Migration(2, "action_events.duration_ms (backfilled from attrs)", _added_columns(2)),
    Migration(3, "observations (events.normalized)", _observations_table),
    Migration(
        4,
        "error fingerprints, action_outcomes (aggregated as transitions arrive), ended_actions",
        _analytics,
    ),
    Migration(5, "action_events.trace_id (traced actions from now on)", _added_columns(5)),
    Migration(6, "entropy_baselines, deviations, entropy_scans, rule_decisions", entropy_tables),
    Migration(7, "graph_versions (the component graph per environment)", graph_tables),
)
LATEST = MIGRATIONS[-1].version


def bookkeeping_statements(database: str) -> list[str]:
    """The database and the table that records the migrations applied."""
    return [
        f"CREATE DATABASE IF NOT EXISTS {database}",
        f"""
        CREATE TABLE IF NOT EXISTS {database}.{TABLE_MIGRATIONS} (
            version UInt32,
            description String,
            applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
        )
        ENGINE = ReplacingMergeTree
        ORDER BY version
        """,
    ]
