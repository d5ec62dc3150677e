"""The entropy layer's SQL: everything is aggregated in ClickHouse, per (entity, step);
Python only receives one row per (entity, step) (or per overdue run) and tests it.

`steps(...)` turns observations into step occurrences, per the process convention: the
latency is `duration_ms` when the source knew it, else the time since the run's previous
observation; the next step is the run's next observation's step, `$end` when the run
stopped (its last observation is older than `settled`), unknown (NULL) while it may go on.
"""

from __future__ import annotations

from typing import Final

from karma import names

END: Final = "$end"  # a run ended after this step
START: Final = "$start"  # the baseline row of a process's arrival
EDGE_QUANTILES: Final = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)
GAP_QUANTILES: Final = (0.1, 0.5, 0.9, 0.99, 0.999)


def steps(database: str) -> str:
    """Step occurrences in [%(start)s, %(end)s), their runs read from %(context)s, each
    with its window (`w_ms`: windows of %(window_ms)s ms from the epoch). A latency taken
    from a previous observation more than %(context_ms)s before its window is left out,
    as a scan of that window alone would not see it. `next_step` is
    the next step when it came within the same window, as a scan of that window sees it
    (a baseline learns the share of each next step the same way, so a slow follow-up is
    not counted short); `next_any` is the next step whenever it came, or `$end` when the
    run stopped there (its last observation is older than %(settled)s)."""
    return f"""
        SELECT entity_id, correlation_id, step, ts, w_ms,
            if(duration_ms IS NOT NULL, toFloat64(duration_ms),
               if(rn = 1 OR toUnixTimestamp64Milli(prev_ts) < w_ms - %(context_ms)s, NULL,
                  toFloat64(dateDiff('millisecond', prev_ts, ts)))) AS latency_ms,
            if(rn < cnt AND toUnixTimestamp64Milli(next_ts) < w_ms + %(window_ms)s,
               next_raw, NULL) AS next_step,
            multiIf(rn < cnt, next_raw,
                    ts < toDateTime64(%(settled)s, 3, 'UTC'), '{END}',
                    NULL) AS next_any,
            if(rn < cnt, toFloat64(dateDiff('millisecond', ts, next_ts)), NULL) AS gap_ms
        FROM (
            SELECT entity_id, correlation_id, step, ts, duration_ms,
                intDiv(toUnixTimestamp64Milli(ts), %(window_ms)s) * %(window_ms)s AS w_ms,
                row_number() OVER run AS rn,
                count() OVER run AS cnt,
                lagInFrame(ts) OVER run AS prev_ts,
                leadInFrame(step) OVER run AS next_raw,
                leadInFrame(ts) OVER run AS next_ts
            {_runs(database)}
        )
        WHERE ts >= toDateTime64(%(start)s, 3, 'UTC')
    """


def _runs(database: str) -> str:
    """The steps observed in [%(context)s, %(end)s), windowed by run (`OVER run`)."""
    return f"""FROM {database}.{names.TABLE_OBSERVATIONS} FINAL
            WHERE ts >= toDateTime64(%(context)s, 3, 'UTC')
              AND ts < toDateTime64(%(end)s, 3, 'UTC')
              AND step != '' AND correlation_id != ''
            WINDOW run AS (PARTITION BY entity_id, correlation_id ORDER BY ts, event_id
                           ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)"""


def _quantiles(levels: tuple[float, ...]) -> str:
    return ", ".join(str(q) for q in levels)


def baseline_latency(database: str) -> str:
    """Per (entity, step): latency quantiles, MAD, bucket counts over the edges the same
    data fixes (quantiles), and the entropy of the bucket distribution in bits."""
    return f"""
        SELECT entity_id, step,
            count() AS samples,
            any(med) AS median_ms,
            quantileExactInclusive(0.5)(abs(latency_ms - med)) AS mad_ms,
            any(log_med) AS log_median,
            quantileExactInclusive(0.5)(abs(log1p(latency_ms) - log_med)) AS log_mad,
            stddevSamp(log1p(latency_ms)) AS log_std,
            quantilesExactInclusive(0.1, 0.9, 0.99)(latency_ms) AS tails,
            any(edges) AS bucket_edges_ms,
            sumMap([bucket], [toUInt64(1)]) AS buckets,
            entropy(bucket) AS latency_entropy_bits
        FROM (
            SELECT entity_id, step, latency_ms, med, log_med, edges,
                toUInt8(if(idx = 0, length(edges) + 1, idx)) AS bucket
            FROM (
                SELECT entity_id, step, latency_ms,
                    quantileExactInclusive(0.5)(latency_ms) OVER by_step AS med,
                    quantileExactInclusive(0.5)(log1p(latency_ms)) OVER by_step AS log_med,
                    quantilesExactInclusive({_quantiles(EDGE_QUANTILES)})(latency_ms)
                        OVER by_step AS edges,
                    arrayFirstIndex(e -> latency_ms < e, edges) AS idx
                FROM ({steps(database)}) WHERE latency_ms IS NOT NULL
                WINDOW by_step AS (PARTITION BY entity_id, step)
            )
        )
        GROUP BY entity_id, step
    """


def baseline_sequence(database: str) -> str:
    """Per (entity, step): the next steps' counts and entropy, and the gaps' quantiles."""
    return f"""
        SELECT entity_id, step,
            count() AS occurrences,
            sumMapIf([next_any], [toUInt64(1)], next_any IS NOT NULL) AS nexts,
            ifNull(entropyIf(next_any, next_any IS NOT NULL), 0) AS next_entropy_bits,
            sumMapIf([next_step], [toUInt64(1)], next_step IS NOT NULL) AS window_nexts,
            quantilesExactInclusive({_quantiles(GAP_QUANTILES)})(gap_ms) AS gaps
        FROM ({steps(database)})
        GROUP BY entity_id, step
    """


def baseline_arrival(database: str) -> str:
    """Per entity: the intervals between the starts of its runs (first observations)."""
    return f"""
        SELECT entity_id, length(intervals) AS samples,
            arrayReduce('quantileExactInclusive(0.5)', intervals) AS median_ms,
            arrayReduce('quantileExactInclusive(0.5)', arrayMap(x -> abs(x - median_ms), intervals))
                AS mad_ms
        FROM (
            SELECT entity_id,
                arrayMap(x -> toFloat64(x),
                    arrayPopFront(arrayDifference(arraySort(groupArray(started))))) AS intervals
            FROM (
                SELECT entity_id, correlation_id, toUnixTimestamp64Milli(min(ts)) AS started
                FROM {database}.{names.TABLE_OBSERVATIONS} FINAL
                WHERE ts >= toDateTime64(%(start)s, 3, 'UTC')
                  AND ts < toDateTime64(%(end)s, 3, 'UTC') AND correlation_id != ''
                GROUP BY entity_id, correlation_id
            )
            GROUP BY entity_id
        )
        WHERE samples > 0
    """


def current_baselines(database: str) -> str:
    """The latest baseline of each (entity, step) learned before %(before)s."""
    return f"""
        SELECT entity_id, step,
            argMax(tuple(window_start, window_end, samples, median_ms, mad_ms, log_median,
                         log_mad, log_std, p10_ms, p90_ms, p99_ms, bucket_edges_ms,
                         bucket_counts, latency_entropy_bits, next_steps, next_counts,
                         next_entropy_bits, window_next_steps, window_next_counts, gaps),
                   (window_end, computed_at)) AS b
        FROM {database}.{names.TABLE_BASELINES}
        WHERE window_end <= toDateTime64(%(before)s, 3, 'UTC')
        GROUP BY entity_id, step
    """


def window_latency(database: str) -> str:
    """Per window and (entity, step): the latencies' median (and on ln(1 + latency)) and
    counts per baseline bucket."""
    return f"""
        SELECT s.w_ms AS w_ms, s.entity_id AS entity_id, s.step AS step,
            count() AS samples,
            quantileExactInclusive(0.5)(s.latency_ms) AS median_ms,
            quantileExactInclusive(0.5)(log1p(s.latency_ms)) AS log_median,
            varSamp(log1p(s.latency_ms)) AS log_var,
            sumMap([toUInt8(if(idx = 0, length(edges) + 1, idx))], [toUInt64(1)]) AS buckets
        FROM (
            SELECT w_ms, entity_id, step, latency_ms FROM ({steps(database)})
            WHERE latency_ms IS NOT NULL
        ) AS s
        INNER JOIN (
            SELECT entity_id, step, argMax(bucket_edges_ms, (window_end, computed_at)) AS edges
            FROM {database}.{names.TABLE_BASELINES}
            WHERE window_end <= toDateTime64(%(before)s, 3, 'UTC') AND step != '{START}'
            GROUP BY entity_id, step
        ) AS b ON s.entity_id = b.entity_id AND s.step = b.step
        ARRAY JOIN [arrayFirstIndex(e -> s.latency_ms < e, b.edges)] AS idx
        GROUP BY w_ms, entity_id, step
    """


def window_sequence(database: str) -> str:
    """Per window and (entity, step): the counts of the next steps seen in the window."""
    return f"""
        SELECT w_ms, entity_id, step, sumMap([next_step], [toUInt64(1)]) AS nexts,
            count() AS samples
        FROM ({steps(database)})
        WHERE next_step IS NOT NULL AND next_step != '{END}'
        GROUP BY w_ms, entity_id, step
    """


def quiet_steps(database: str) -> str:
    """Step occurrences (from %(context)s) followed by nothing for %(min_gap_ms)s or more
    (the next one of their run, or %(end)s): the candidates for overdue."""
    return f"""
        SELECT entity_id, correlation_id, step, ts, if(rn < cnt, next_ts, NULL) AS next_ts
        FROM (
            SELECT entity_id, correlation_id, step, ts,
                row_number() OVER run AS rn,
                count() OVER run AS cnt,
                leadInFrame(ts) OVER run AS next_ts
            {_runs(database)}
        )
        WHERE dateDiff('millisecond', ts,
                       if(rn < cnt, next_ts, toDateTime64(%(end)s, 3, 'UTC'))) >= %(min_gap_ms)s
    """


def run_starts(database: str) -> str:
    """Per entity with an arrival baseline: when each run started (from %(context)s), its first step
    and when the entity's next run started (NULL: none before %(end)s)."""
    return f"""
        SELECT entity_id, started, first_step,
            if(n < total, next_start, NULL) AS next_start
        FROM (
            SELECT entity_id, started, first_step,
                row_number() OVER by_entity AS n,
                count() OVER by_entity AS total,
                leadInFrame(started) OVER by_entity AS next_start
            FROM (
                SELECT entity_id, correlation_id, min(ts) AS started, argMin(step, ts) AS first_step
                FROM {database}.{names.TABLE_OBSERVATIONS} FINAL
                WHERE ts >= toDateTime64(%(context)s, 3, 'UTC')
                  AND ts < toDateTime64(%(end)s, 3, 'UTC') AND correlation_id != ''
                  AND entity_id IN (SELECT entity_id FROM {database}.{names.TABLE_BASELINES}
                                    WHERE step = '{START}')
                GROUP BY entity_id, correlation_id
            )
            WINDOW by_entity AS (PARTITION BY entity_id ORDER BY started
                                 ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
        )
    """


def observations_in(database: str) -> str:
    """Observations per window in [%(start)s, %(end)s)."""
    return f"""
        SELECT intDiv(toUnixTimestamp64Milli(ts), %(window_ms)s) * %(window_ms)s AS w_ms,
            count() AS observations
        FROM {database}.{names.TABLE_OBSERVATIONS} FINAL
        WHERE ts >= toDateTime64(%(start)s, 3, 'UTC') AND ts < toDateTime64(%(end)s, 3, 'UTC')
        GROUP BY w_ms
    """
