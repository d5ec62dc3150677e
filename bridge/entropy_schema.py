"""The entropy layer's tables (ledger migration 6).

- `entropy_baselines`: what normal looks like per (entity, step), over the training window
  it was learned from; a row per computation, so past expectations stay readable. The step
  `$start` holds a process's arrival: the interval between the starts of its runs.
- `deviations`: what a scan found, one row per (entity, step, metric, window): the id is
  derived from those, so a rescan replaces a row instead of adding one.
- `entropy_scans`: the windows scanned; a scan resumes after the last one.
- `rule_decisions`: each rule's decision on each event it matched (fired, deduplicated,
  rate_limited, cooling_down, max_in_flight, awaiting_approval, dry_run, invalid) with
  its reason; the action's correlation id is the event's id.
"""

from __future__ import annotations

from karma import names


def entropy_tables(database: str) -> list[str]:
    return [
        f"""
        CREATE TABLE IF NOT EXISTS {database}.{names.TABLE_BASELINES} (
            entity_id String,
            step LowCardinality(String),
            window_start DateTime64(3, 'UTC') COMMENT 'the training window, inclusive',
            window_end DateTime64(3, 'UTC') COMMENT 'the training window, exclusive',
            samples UInt64 COMMENT 'latencies learned from',
            median_ms Float64,
            mad_ms Float64 COMMENT 'median absolute deviation (unscaled)',
            log_median Float64 COMMENT 'of ln(1 + latency_ms): latencies are skewed',
            log_mad Float64,
            log_std Float64,
            p10_ms Float64,
            p90_ms Float64,
            p99_ms Float64,
            bucket_edges_ms Array(Float64) COMMENT 'upper edges; the last bucket is open',
            bucket_counts Array(UInt64),
            latency_entropy_bits Float64,
            next_steps Array(String) COMMENT '$end: the step ended its run',
            next_counts Array(UInt64),
            next_entropy_bits Float64,
            window_next_steps Array(String) COMMENT 'next steps seen within a scan window',
            window_next_counts Array(UInt64),
            gaps Array(Float64) COMMENT 'quantiles 0.1 .. 0.999 of the time to the next step',
            computed_at DateTime64(3, 'UTC') DEFAULT now64(3)
        )
        ENGINE = ReplacingMergeTree(computed_at)
        ORDER BY (entity_id, step, window_end)
        """,
        f"""
        CREATE TABLE IF NOT EXISTS {database}.{names.TABLE_DEVIATIONS} (
            deviation_id String,
            entity_id String,
            step LowCardinality(String),
            metric LowCardinality(String),
            window_start DateTime64(3, 'UTC'),
            window_end DateTime64(3, 'UTC'),
            baseline_value Float64,
            observed_value Float64,
            samples UInt64 COMMENT 'in the window',
            baseline_samples UInt64,
            surprise_bits Float64,
            p_value Float64,
            detail String COMMENT 'JSON: what the metric compared',
            detected_at DateTime64(3, 'UTC') DEFAULT now64(3)
        )
        ENGINE = ReplacingMergeTree(detected_at)
        PARTITION BY toYYYYMM(window_end)
        ORDER BY deviation_id
        """,
        f"""
        CREATE TABLE IF NOT EXISTS {database}.{names.TABLE_SCANS} (
            window_start DateTime64(3, 'UTC'),
            window_end DateTime64(3, 'UTC'),
            observations UInt64,
            deviations UInt64,
            finished_at DateTime64(3, 'UTC') DEFAULT now64(3)
        )
        ENGINE = ReplacingMergeTree(finished_at)
        ORDER BY window_end
        """,
        f"""
        CREATE TABLE IF NOT EXISTS {database}.{names.TABLE_RULE_DECISIONS} (
            decision_id String COMMENT 'from (rule, event): a redelivery replaces the row',
            rule LowCardinality(String),
            event_id String COMMENT 'the deviation or observation matched',
            event_type LowCardinality(String),
            entity_id String,
            decision LowCardinality(String),
            reason String,
            action_id String COMMENT 'the action requested, or that would have been',
            action_type LowCardinality(String),
            params String COMMENT 'JSON, as rendered',
            decided_at DateTime64(3, 'UTC') DEFAULT now64(3)
        )
        ENGINE = ReplacingMergeTree(decided_at)
        PARTITION BY toYYYYMM(decided_at)
        ORDER BY decision_id
        """,
    ]
