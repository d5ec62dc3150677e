"""Deviations of consecutive scan windows against one set of baselines, found in one pass:
ClickHouse aggregates per (window, entity, step), Python tests each aggregate.

A batch gives what scanning its windows one by one would: a step's next step counts only
when it came in the same window, a run is overdue in the window where its silence
crossed the threshold (and only if nothing followed before that window ended), a periodic
process misses a start in the window where its next run became due.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge import entropy_queries as q
from bridge.entropy_model import Baseline, Deviation, finite, text, utc
from bridge.ledger import Ledger
from karma.entropy import detectors as d
from karma.settings import EntropySettings

Windows = list[tuple[datetime, datetime]]
Base = dict[tuple[str, str], Baseline]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Detector:
    def __init__(self, ledger: Ledger, settings: EntropySettings, window: timedelta) -> None:
        self._ledger = ledger
        self._db = ledger.database
        self.settings = settings
        self._window_ms = int(window.total_seconds() * 1000)

    def detect(self, windows: Windows, base: Base) -> dict[datetime, tuple[list[Deviation], int]]:
        """Per window start: its deviations and the observations in it."""
        out: dict[datetime, tuple[list[Deviation], int]] = {w[0]: ([], 0) for w in windows}
        if not windows:
            return out
        start, end = windows[0][0], windows[-1][1]
        params = self._params(start, end)
        counts = self._rows(q.observations_in, params)
        seen = {self._at(r["w_ms"]): int(r["observations"]) for r in counts}
        found: dict[datetime, list[Deviation]] = {w[0]: [] for w in windows}
        for deviation in self._deviations(windows, base, params):
            found[deviation.window_start].append(deviation)
        return {w: (found[w], seen.get(w, 0)) for w in out}

    def _params(self, start: datetime, end: datetime) -> dict[str, Any]:
        return {
            "context": text(start - timedelta(seconds=self.settings.context_s)),
            "start": text(start),
            "end": text(end),
            "settled": text(EPOCH),  # a window never counts `$end`: its runs may go on
            "before": text(start),
            "window_ms": self._window_ms,
            "context_ms": self.settings.context_s * 1000,
        }

    def _at(self, w_ms: int) -> datetime:
        return EPOCH + timedelta(milliseconds=int(w_ms))

    def _span(self, w_ms: int) -> tuple[datetime, datetime]:
        at = self._at(w_ms)
        return at, at + timedelta(milliseconds=self._window_ms)

    def _deviations(
        self, windows: Windows, base: Base, params: dict[str, Any]
    ) -> Iterator[Deviation]:
        minimum = self.settings.min_window_samples
        for r in self._rows(q.window_latency, params):
            b = base.get((r["entity_id"], r["step"]))
            if b is None or int(r["samples"]) < minimum or not b.bucket_edges_ms:
                continue  # no baseline, too few samples, or a step learned without latencies
            counts = {str(k): float(v) for k, v in zip(*r["buckets"], strict=True)}
            yield from self._latency(b, *self._span(r["w_ms"]), r, counts)
        for r in self._rows(q.window_sequence, params):
            b = base.get((r["entity_id"], r["step"]))
            if b is None or int(r["samples"]) < minimum or not b.window_next_counts:
                continue
            nexts = {str(k): float(v) for k, v in zip(*r["nexts"], strict=True)}
            yield from self._sequence(b, *self._span(r["w_ms"]), nexts)
        yield from self._overdue(windows, base, params)
        yield from self._missed_starts(windows, base, params)

    def _significant(self, log_p: float) -> bool:
        return d.surprise_bits(log_p) >= self.settings.min_surprise_bits

    def _deviation(self, b: Baseline, start: datetime, end: datetime, **kw: Any) -> Deviation:
        log_p = kw.pop("log_p")
        return Deviation(
            entity_id=b.entity_id, step=b.step, window_start=start, window_end=end,
            baseline_samples=b.samples, surprise_bits=round(d.surprise_bits(log_p), 3),
            p_value=d.p_value(log_p), **kw,
        )  # fmt: skip

    def _latency(
        self, b: Baseline, start: datetime, end: datetime, r: dict[str, Any],
        counts: dict[str, float],
    ) -> Iterator[Deviation]:  # fmt: skip
        """On ln(1 + latency): skewed latencies are close to normal there."""
        n, median = int(r["samples"]), float(r["median_ms"])
        bits = self.settings.min_surprise_bits
        sigma = d.robust_sigma(b.log_mad, b.log_median)
        shift = float(r["log_median"]) - b.log_median
        z = shift / (d.MEDIAN_STANDARD_ERROR * sigma / math.sqrt(n))
        # The exact p-values only where the statistic can reach the threshold.
        if abs(z) >= d.z_at(bits) and abs(shift) / sigma >= self.settings.min_effect_sigmas:
            z, shift_log_p = d.shift_log_p(float(r["log_median"]), n, b.log_median, b.log_mad)
            yield self._deviation(
                b, start, end, metric="latency_shift", baseline_value=b.median_ms,
                observed_value=median, samples=n, log_p=shift_log_p,
                detail={"robust_z": round(z, 3), "baseline_mad_ms": b.mad_ms},
            )  # fmt: skip
            return
        variance = finite(r["log_var"])
        ratio = math.sqrt(variance) / b.log_std if b.log_std > 0 else math.inf
        rise = (n - 1) * variance / b.log_std**2 if n > 1 and b.log_std > 0 else 0.0
        g, kl = d.g_statistic(counts, b.buckets)
        categories = len(set(counts) | set(b.buckets))
        # Significant and large enough: a divergence of at least min_divergence_bits, or
        # a spread at least min_spread_ratio times the baseline's.
        spread = (
            categories > 1
            and kl >= self.settings.min_divergence_bits
            and g >= d.chi2_at(bits, categories - 1)
        )
        wider = n > 1 and ratio >= self.settings.min_spread_ratio and rise >= d.chi2_at(bits, n - 1)
        if not (spread or wider):
            return
        _, _, spread_log_p = d.g_test_log_p(counts, b.buckets)
        variance_log_p = d.variance_rise_log_p(variance, n, b.log_std)
        # The better of two tests, paid for (Bonferroni: one bit).
        log_p = min(spread_log_p if spread else 0.0, variance_log_p if wider else 0.0)
        log_p = min(0.0, log_p + math.log(2))
        if self._significant(log_p):
            total = sum(counts.values()) or 1.0
            window_h = d.entropy_bits([c / total for c in counts.values()])
            yield self._deviation(
                b, start, end, metric="latency_spread", baseline_value=b.latency_entropy_bits,
                observed_value=round(window_h, 6), samples=n, log_p=log_p,
                detail={"kl_bits": round(kl, 6), "g": round(g, 3), "buckets": counts,
                        "baseline_buckets": b.buckets, "edges_ms": b.bucket_edges_ms,
                        "spread_ratio": round(ratio, 3) if math.isfinite(ratio) else None},
            )  # fmt: skip

    def _sequence(
        self, b: Baseline, start: datetime, end: datetime, nexts: dict[str, float]
    ) -> Iterator[Deviation]:
        # Compared with what the baseline saw within its own windows, the same way.
        base = b.window_nexts
        if not base:
            return
        g, kl = d.g_statistic(nexts, base)
        categories = len(set(nexts) | set(base))
        if (
            categories < 2
            or kl < self.settings.min_divergence_bits
            or g < d.chi2_at(self.settings.min_surprise_bits, categories - 1)
        ):
            return
        g, kl, log_p = d.g_test_log_p(nexts, base)
        if self._significant(log_p):
            yield self._deviation(
                b, start, end, metric="sequence_change", baseline_value=b.next_entropy_bits,
                observed_value=round(kl, 6), samples=int(sum(nexts.values())), log_p=log_p,
                detail={"kl_bits": round(kl, 6), "g": round(g, 3), "next": nexts,
                        "baseline_next": base},
            )  # fmt: skip

    def _window_of(self, at: datetime, windows: Windows) -> tuple[datetime, datetime] | None:
        start = EPOCH + ((at - EPOCH) // timedelta(milliseconds=self._window_ms)) * timedelta(
            milliseconds=self._window_ms
        )
        span = (start, start + timedelta(milliseconds=self._window_ms))
        return span if windows[0][0] <= start < windows[-1][1] else None

    def _overdue(self, windows: Windows, base: Base, params: dict[str, Any]) -> Iterator[Deviation]:
        """Runs that went quiet after a step that is rarely their last, for longer than
        `overdue_factor` x the step's p99.9 gap: reported once, in the window where the
        wait became overdue, if nothing followed before that window ended."""
        factor = self.settings.overdue_factor
        thresholds = {
            k: b.gap(0.999) * factor for k, b in base.items() if len(b.gaps) == len(q.GAP_QUANTILES)
        }
        if not thresholds:
            return
        context = timedelta(seconds=self.settings.context_s)
        stuck: dict[tuple[tuple[str, str], datetime], list[tuple[str, float]]] = {}
        for r in self._rows(q.quiet_steps, {**params, "min_gap_ms": int(min(thresholds.values()))}):
            key = (r["entity_id"], r["step"])
            if key not in thresholds:
                continue
            last = utc(r["ts"])
            span = self._window_of(last + timedelta(milliseconds=thresholds[key]), windows)
            if span is None or last < span[1] - context:
                continue
            if r["next_ts"] is not None and utc(r["next_ts"]) < span[1]:
                continue  # the run went on before the window ended
            elapsed = (span[1] - last).total_seconds() * 1000
            stuck.setdefault((key, span[0]), []).append((r["correlation_id"], elapsed))
        for (key, start), runs in sorted(stuck.items()):
            b = base[key]
            ended = b.nexts.get(q.END, 0.0)
            followed = sum(v for k, v in b.nexts.items() if k != q.END)
            elapsed = min(e for _, e in runs)
            log_p = d.overdue_log_p(elapsed, b.gap(0.99), b.gap(0.999), ended, followed)
            if d.surprise_bits(log_p) >= self.settings.min_overdue_bits:
                yield self._deviation(
                    b, start, start + timedelta(milliseconds=self._window_ms), metric="overdue",
                    baseline_value=b.gap(0.999), observed_value=elapsed, samples=len(runs),
                    log_p=log_p,
                    detail={"runs": sorted(c for c, _ in runs)[:20], "ended_share":
                            round(ended / max(ended + followed, 1.0), 6)},
                )  # fmt: skip

    def _missed_starts(
        self, windows: Windows, base: Base, params: dict[str, Any]
    ) -> Iterator[Deviation]:
        """Periodic processes (steady intervals between runs) whose next run became due
        in a window and had not started when it ended."""
        arrivals = {
            e: b
            for (e, s), b in base.items()
            if s == q.START and b.mad_ms <= b.median_ms * self.settings.periodic_max_mad_ratio
        }
        if not arrivals:
            return
        context = timedelta(seconds=self.settings.context_s)
        for r in self._rows(q.run_starts, params):
            b = arrivals.get(r["entity_id"])
            if b is None:
                continue
            last = utc(r["started"])
            sigma = max(b.mad_ms * d.MAD_TO_SIGMA, b.median_ms * 0.02, 1000.0)
            due = b.median_ms + self.settings.missed_start_sigmas * sigma
            span = self._window_of(last + timedelta(milliseconds=due), windows)
            if span is None or last < span[1] - context:
                continue
            if r["next_start"] is not None and utc(r["next_start"]) < span[1]:
                continue
            since = (span[1] - last).total_seconds() * 1000
            log_p = d.missed_start_log_p(since / 1000, b.median_ms / 1000, b.mad_ms / 1000)
            if self._significant(log_p):
                yield self._deviation(
                    b, span[0], span[1], metric="missed_start", baseline_value=b.median_ms,
                    observed_value=since, samples=0, log_p=log_p,
                    detail={"last_start": last.isoformat(), "first_step": r["first_step"]},
                )  # fmt: skip

    def _rows(self, query: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
        return self._ledger.named_rows(query(self._db), params)
