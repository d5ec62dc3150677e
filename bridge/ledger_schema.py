"""The ClickHouse schema of the action ledger (created idempotently at start).

`action_events` holds every transition once: the sink skips event ids it has already
written, and ReplacingMergeTree on (action_id, seq) — i.e. on event_id — collapses any
duplicate that still slips in (two sinks during a rebalance). `action_state_current`
keeps the latest state per action, fed by a materialized view.
"""

from __future__ import annotations

from karma import names

ACTION_EVENTS_COLUMNS = (
    "event_id",
    "action_id",
    "seq",
    "ts",
    "event_type",
    "state",
    "action_type",
    "entity_id",
    "correlation_id",
    "idempotency_key",
    "tenant",
    "priority",
    "attempt",
    "error_type",
    "error_message",
    "tags",
    "attrs",
    "source_system",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
)


def schema_statements(database: str) -> list[str]:
    events = f"{database}.{names.TABLE_ACTION_EVENTS}"
    current = f"{database}.{names.TABLE_ACTION_STATE_CURRENT}"
    return [
        f"CREATE DATABASE IF NOT EXISTS {database}",
        f"""
        CREATE TABLE IF NOT EXISTS {events} (
            event_id String,
            action_id String,
            seq UInt32,
            ts DateTime64(3, 'UTC'),
            event_type LowCardinality(String),
            state LowCardinality(String) COMMENT 'state after this event; empty for progress',
            action_type LowCardinality(String),
            entity_id String,
            correlation_id String,
            idempotency_key String,
            tenant LowCardinality(String),
            priority LowCardinality(String),
            attempt UInt16,
            error_type LowCardinality(String),
            error_message String,
            tags Map(String, String),
            attrs String COMMENT 'JSON; secrets are redacted before they reach Kafka',
            source_system LowCardinality(String),
            kafka_topic LowCardinality(String),
            kafka_partition Int32,
            kafka_offset Int64,
            ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
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
