"""The entropy scan: learn what normal looks like per (entity, step), and find, window
after window, where the observations stopped looking like it.

A scan covers whole windows of `scan_window` (aligned to the epoch), from the end of the
last window scanned (the `entropy_scans` table) to the last whole window before now, so a
scan that crashed is resumed by the next one and no window is scanned twice by design
(a window scanned again writes the same deviation ids: nothing is duplicated). Baselines
are learned over the `training_window` before a window, again once they are older than
`relearn_every`, so expectations follow slow legitimate change.

Blocking (chdb is in-process): async callers run it off the event loop.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge import entropy_queries as q
from bridge.ledger import Ledger
from karma import names
from karma.entropy import detectors as d
from karma.envelope import Envelope, EventSource
from karma.settings import EntropySettings

DEVIATION_EVENT: str = "entropy.deviation"
BASELINE_COLUMNS = [
    "entity_id", "step", "window_start", "window_end", "samples", "median_ms", "mad_ms",
    "log_median", "log_mad", "log_std", "p10_ms", "p90_ms", "p99_ms", "bucket_edges_ms",
    "bucket_counts", "latency_entropy_bits", "next_steps", "next_counts",
    "next_entropy_bits", "gaps",
]  # fmt: skip
DEVIATION_COLUMNS = [
    "deviation_id", "entity_id", "step", "metric", "window_start", "window_end",
    "baseline_value", "observed_value", "samples", "baseline_samples", "surprise_bits",
    "p_value", "detail",
]  # fmt: skip


def _text(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.") + f"{ts.microsecond // 1000:03d}"


def _finite(value: Any) -> float:
    number = float(value)
    return 0.0 if math.isnan(number) or math.isinf(number) else number


def _gaps(quantiles: list[float]) -> list[float]:
    """The gap quantiles, or none when no step followed (ClickHouse gives NaN)."""
    values = [float(g) for g in quantiles]
    return [] if any(math.isnan(g) for g in values) else values


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


@dataclass(frozen=True)
class Baseline:
    """What normal looks like for one (entity, step), learned over [window_start, window_end)."""

    entity_id: str
    step: str
    window_start: datetime
    window_end: datetime
    samples: int
    median_ms: float
    mad_ms: float
    log_median: float = 0.0  # of ln(1 + latency_ms)
    log_mad: float = 0.0
    log_std: float = 0.0
    p10_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    bucket_edges_ms: list[float] = field(default_factory=list)
    bucket_counts: list[int] = field(default_factory=list)
    latency_entropy_bits: float = 0.0
    next_steps: list[str] = field(default_factory=list)
    next_counts: list[int] = field(default_factory=list)
    next_entropy_bits: float = 0.0
    gaps: list[float] = field(default_factory=list)  # q.GAP_QUANTILES of the gap after it

    @property
    def buckets(self) -> dict[str, float]:
        return {str(i + 1): float(c) for i, c in enumerate(self.bucket_counts)}

    @property
    def nexts(self) -> dict[str, float]:
        return {s: float(c) for s, c in zip(self.next_steps, self.next_counts, strict=True)}

    def row(self) -> list[Any]:
        return [getattr(self, c) for c in BASELINE_COLUMNS]

    def as_json(self) -> dict[str, Any]:
        out = {c: getattr(self, c) for c in BASELINE_COLUMNS}
        out["window_start"] = self.window_start.isoformat()
        out["window_end"] = self.window_end.isoformat()
        return out


@dataclass(frozen=True)
class Deviation:
    """A significant difference between a window and its baseline, scored in bits."""

    entity_id: str
    step: str
    metric: str
    window_start: datetime
    window_end: datetime
    baseline_value: float
    observed_value: float
    samples: int
    baseline_samples: int
    surprise_bits: float
    p_value: float
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def deviation_id(self) -> str:
        key = f"{self.entity_id}\x1f{self.step}\x1f{self.metric}\x1f{_text(self.window_start)}"
        return "dev_" + hashlib.sha256(key.encode()).hexdigest()[:32]

    def row(self) -> list[Any]:
        values = {**self.__dict__, "deviation_id": self.deviation_id}
        values["detail"] = json.dumps(self.detail, sort_keys=True, separators=(",", ":"))
        return [values[c] for c in DEVIATION_COLUMNS]

    def as_json(self) -> dict[str, Any]:
        return {
            "deviation_id": self.deviation_id,
            **{k: v for k, v in self.__dict__.items() if k not in ("window_start", "window_end")},
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
        }

    def envelope(self) -> Envelope:
        """As published on `entropy.deviation` (key: the entity id)."""
        attrs = {k: v for k, v in self.as_json().items() if k not in ("deviation_id", "entity_id")}
        return Envelope(
            event_id=self.deviation_id,
            ts=self.window_end,
            event_type=DEVIATION_EVENT,
            entity_id=self.entity_id,
            correlation_id=self.deviation_id,
            source=EventSource(system="karma.entropy"),
            attrs=attrs,
        )


@dataclass
class ScanResult:
    windows: list[tuple[datetime, datetime]] = field(default_factory=list)
    deviations: list[Deviation] = field(default_factory=list)
    observations: int = 0
    learned: int = 0  # baselines (re)computed
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "windows": [[a.isoformat(), b.isoformat()] for a, b in self.windows],
            "observations": self.observations,
            "baselines_learned": self.learned,
            "seconds": round(self.seconds, 3),
            "deviations": [x.as_json() for x in self.deviations],
        }


class Scanner:
    """Baselines and deviations over one ledger's observations."""

    def __init__(self, ledger: Ledger, settings: EntropySettings) -> None:
        self.ledger = self._ledger = ledger
        self._db = ledger.database
        self.settings = settings

    @property
    def window(self) -> timedelta:
        return timedelta(seconds=self.settings.scan_window_s)

    # -- baselines ----------------------------------------------------------------------

    def learn(self, until: datetime, *, store: bool = True) -> list[Baseline]:
        """Learn baselines over the training window before `until` (and store them)."""
        until = _utc(until)
        start = until - timedelta(seconds=self.settings.training_window_s)
        params = {
            "context": _text(start),
            "start": _text(start),
            "end": _text(until),
            "settled": _text(until - self.window),
        }
        latency = {(r["entity_id"], r["step"]): r for r in self._rows(q.baseline_latency, params)}
        sequence = {(r["entity_id"], r["step"]): r for r in self._rows(q.baseline_sequence, params)}
        learned: list[Baseline] = []
        for key in sorted(set(latency) | set(sequence)):
            lat, seq = latency.get(key, {}), sequence.get(key, {})
            if int(lat.get("samples", 0)) < self.settings.min_baseline_samples:
                continue
            counts = dict(zip(*lat["buckets"], strict=True))
            edges = [float(e) for e in lat["bucket_edges_ms"]]
            nexts = dict(zip(*seq.get("nexts", ([], [])), strict=True))
            learned.append(
                Baseline(
                    entity_id=key[0], step=key[1], window_start=start, window_end=until,
                    samples=int(lat["samples"]), median_ms=float(lat["median_ms"]),
                    mad_ms=float(lat["mad_ms"]), log_median=float(lat["log_median"]),
                    log_mad=float(lat["log_mad"]), log_std=_finite(lat["log_std"]),
                    p10_ms=float(lat["tails"][0]), p90_ms=float(lat["tails"][1]),
                    p99_ms=float(lat["tails"][2]), bucket_edges_ms=edges,
                    bucket_counts=[int(counts.get(i, 0)) for i in range(1, len(edges) + 2)],
                    latency_entropy_bits=float(lat["latency_entropy_bits"]),
                    next_steps=sorted(nexts), next_counts=[int(nexts[s]) for s in sorted(nexts)],
                    next_entropy_bits=float(seq.get("next_entropy_bits", 0.0)),
                    gaps=_gaps(seq.get("gaps", [])),
                )
            )  # fmt: skip
        for r in self._rows(q.baseline_arrival, params):
            if int(r["samples"]) >= self.settings.min_baseline_samples:
                learned.append(
                    Baseline(
                        entity_id=r["entity_id"], step=q.START, window_start=start,
                        window_end=until, samples=int(r["samples"]),
                        median_ms=float(r["median_ms"]), mad_ms=float(r["mad_ms"]),
                    )
                )  # fmt: skip
        if learned and store:
            self._ledger.insert_rows(
                names.TABLE_BASELINES, [b.row() for b in learned], BASELINE_COLUMNS
            )
        return learned

    def baselines(self, before: datetime, entity_id: str = "") -> list[Baseline]:
        """The latest baseline of each (entity, step) learned before `before`."""
        rows = self._rows(q.current_baselines, {"before": _text(_utc(before))})
        out = []
        for r in rows:
            if entity_id and r["entity_id"] != entity_id:
                continue
            values = dict(zip(BASELINE_COLUMNS[2:], r["b"], strict=True))
            values["window_start"] = _utc(values["window_start"])
            values["window_end"] = _utc(values["window_end"])
            out.append(Baseline(entity_id=r["entity_id"], step=r["step"], **values))
        return sorted(out, key=lambda b: (b.entity_id, b.step))

    # -- scans --------------------------------------------------------------------------

    def pending_windows(self, now: datetime) -> list[tuple[datetime, datetime]]:
        """The whole windows between the last one scanned and `now` (the latest
        `max_windows_per_scan` of them; a first scan takes the last whole window)."""
        size = self.window
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        last_end = epoch + ((_utc(now) - epoch) // size) * size
        done = self._ledger.rows(
            f"SELECT max(window_end) FROM {self._db}.{names.TABLE_SCANS} "
            "WHERE window_end <= toDateTime64(%(now)s, 3, 'UTC')",
            {"now": _text(last_end)},
        )
        previous = _utc(done[0][0]) if done and done[0][0].year > 1970 else last_end - size
        starts = []
        start = max(previous, last_end - size * self.settings.max_windows_per_scan)
        while start + size <= last_end:
            starts.append(start)
            start += size
        return [(a, a + size) for a in starts]

    def windows_between(self, since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
        """The whole windows in [since, until) (aligned to the epoch), for a backfill."""
        size = self.window
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        start = epoch + -((epoch - _utc(since)) // size) * size  # rounded up
        windows = []
        while start + size <= _utc(until):
            windows.append((start, start + size))
            start += size
        return windows

    def scan(self, now: datetime, *, dry_run: bool = False) -> ScanResult:
        """Scan every pending window; store (unless `dry_run`) deviations and progress."""
        began = time.monotonic()
        result = ScanResult()
        for start, end in self.pending_windows(now):
            found, seen, learned = self.scan_window(start, end, dry_run=dry_run)
            result.windows.append((start, end))
            result.deviations.extend(found)
            result.observations += seen
            result.learned += learned
        result.seconds = time.monotonic() - began
        result.deviations.sort(key=lambda x: -x.surprise_bits)
        return result

    def scan_window(
        self, start: datetime, end: datetime, *, dry_run: bool = False
    ) -> tuple[list[Deviation], int, int]:
        """(deviations, observations in the window, baselines learned) of one window;
        unless `dry_run`, the deviations are stored and the window recorded as scanned.
        The baselines a window needs are learned and kept even in a dry run: they are
        expectations, not findings (and the window's histogram is counted against them
        in ClickHouse)."""
        found, seen, learned = self.detect(start, end)
        if not dry_run:
            self.store(found)
            self.mark_scanned(start, end, found, seen)
        return found, seen, learned

    def detect(self, start: datetime, end: datetime) -> tuple[list[Deviation], int, int]:
        """One window's deviations, the observations in it and the baselines learned
        (and stored) for it: they are due once `relearn_every_s` passed."""
        current = {(b.entity_id, b.step): b for b in self.baselines(start)}
        relearn = timedelta(seconds=self.settings.relearn_every_s)
        learned = 0
        if not current or max(b.window_end for b in current.values()) <= start - relearn:
            fresh = self.learn(start)
            current.update({(b.entity_id, b.step): b for b in fresh})
            learned = len(fresh)
        found = list(self._deviations(start, end, current))
        seen = int(self._ledger.rows(q.observations_in(self._db), self._window(start, end))[0][0])
        return found, seen, learned

    def store(self, deviations: list[Deviation]) -> None:
        if deviations:
            self._ledger.insert_rows(
                names.TABLE_DEVIATIONS, [x.row() for x in deviations], DEVIATION_COLUMNS
            )

    def mark_scanned(
        self, start: datetime, end: datetime, deviations: list[Deviation], seen: int
    ) -> None:
        """Record a window as scanned: the next scan starts after it."""
        self._ledger.insert_rows(
            names.TABLE_SCANS,
            [[start, end, seen, len(deviations)]],
            ["window_start", "window_end", "observations", "deviations"],
        )

    def _window(self, start: datetime, end: datetime) -> dict[str, Any]:
        return {
            "context": _text(start - timedelta(seconds=self.settings.context_s)),
            "start": _text(start),
            "end": _text(end),
            "settled": _text(start),
            "before": _text(start),
        }

    def _deviations(
        self, start: datetime, end: datetime, base: dict[tuple[str, str], Baseline]
    ) -> Iterator[Deviation]:
        params = self._window(start, end)
        minimum = self.settings.min_window_samples
        for r in self._rows(q.window_latency, params):
            b = base.get((r["entity_id"], r["step"]))
            if b is None or int(r["samples"]) < minimum:
                continue
            counts = {str(k): float(v) for k, v in zip(*r["buckets"], strict=True)}
            yield from self._latency(b, start, end, r, counts)
        for r in self._rows(q.window_sequence, params):
            b = base.get((r["entity_id"], r["step"]))
            if b is None or int(r["samples"]) < minimum or not b.next_counts:
                continue
            nexts = {str(k): float(v) for k, v in zip(*r["nexts"], strict=True)}
            yield from self._sequence(b, start, end, nexts)
        yield from self._overdue(start, end, base)
        yield from self._missed_starts(start, end, base)

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
        z, shift_log_p = d.shift_log_p(float(r["log_median"]), n, b.log_median, b.log_mad)
        effect = abs(float(r["log_median"]) - b.log_median) / d.robust_sigma(
            b.log_mad, b.log_median
        )
        if self._significant(shift_log_p) and effect >= self.settings.min_effect_sigmas:
            yield self._deviation(
                b, start, end, metric="latency_shift", baseline_value=b.median_ms,
                observed_value=median, samples=n, log_p=shift_log_p,
                detail={"robust_z": round(z, 3), "baseline_mad_ms": b.mad_ms},
            )  # fmt: skip
            return
        g, kl, spread_log_p = d.g_test_log_p(counts, b.buckets)
        variance_log_p = d.variance_rise_log_p(_finite(r["log_var"]), n, b.log_std)
        log_p = min(spread_log_p, variance_log_p)
        if self._significant(log_p):
            total = sum(counts.values()) or 1.0
            window_h = d.entropy_bits([c / total for c in counts.values()])
            ratio = math.sqrt(_finite(r["log_var"])) / b.log_std if b.log_std > 0 else math.inf
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
        # The window never counts `$end` (runs still going), so neither does the baseline.
        base = {k: v for k, v in b.nexts.items() if k != q.END}
        if not base:
            return
        g, kl, log_p = d.g_test_log_p(nexts, base)
        if self._significant(log_p):
            yield self._deviation(
                b, start, end, metric="sequence_change", baseline_value=b.next_entropy_bits,
                observed_value=round(kl, 6), samples=int(sum(nexts.values())), log_p=log_p,
                detail={"kl_bits": round(kl, 6), "g": round(g, 3), "next": nexts,
                        "baseline_next": base},
            )  # fmt: skip

    def _overdue(
        self, start: datetime, end: datetime, base: dict[tuple[str, str], Baseline]
    ) -> Iterator[Deviation]:
        """Runs that went quiet after a step that is rarely their last, and whose wait
        became overdue (longer than `overdue_factor` x the baseline's p99.9 gap) during
        this window: each is reported once, not again in every later window."""
        factor = self.settings.overdue_factor
        thresholds = {
            k: b.gaps[-1] * factor for k, b in base.items() if len(b.gaps) == len(q.GAP_QUANTILES)
        }
        if not thresholds:
            return
        params = {**self._window(start, end), "min_gap_ms": int(min(thresholds.values()))}
        params["context"] = _text(end - timedelta(seconds=self.settings.context_s))
        stuck: dict[tuple[str, str], list[tuple[str, float]]] = {}
        for r in self._rows(q.open_runs, params):
            key = (r["entity_id"], r["last_step"])
            if key not in thresholds:
                continue
            last = _utc(r["last_ts"])
            elapsed = (end - last).total_seconds() * 1000
            before = (start - last).total_seconds() * 1000
            if elapsed >= thresholds[key] > before:
                stuck.setdefault(key, []).append((r["correlation_id"], elapsed))
        for key, runs in sorted(stuck.items()):
            b = base[key]
            ended = b.nexts.get(q.END, 0.0)
            followed = sum(v for k, v in b.nexts.items() if k != q.END)
            elapsed = min(e for _, e in runs)
            log_p = d.overdue_log_p(elapsed, b.gaps[2], b.gaps[3], ended, followed)
            if d.surprise_bits(log_p) >= self.settings.min_overdue_bits:
                yield self._deviation(
                    b, start, end, metric="overdue", baseline_value=b.gaps[3],
                    observed_value=elapsed, samples=len(runs), log_p=log_p,
                    detail={"runs": sorted(c for c, _ in runs)[:20], "ended_share":
                            round(ended / max(ended + followed, 1.0), 6)},
                )  # fmt: skip

    def _missed_starts(
        self, start: datetime, end: datetime, base: dict[tuple[str, str], Baseline]
    ) -> Iterator[Deviation]:
        """Periodic processes (steady intervals between runs) whose next run is overdue
        during this window."""
        arrivals = {
            e: b
            for (e, s), b in base.items()
            if s == q.START and b.mad_ms <= b.median_ms * self.settings.periodic_max_mad_ratio
        }
        if not arrivals:
            return
        params = {**self._window(start, end)}
        params["context"] = _text(end - timedelta(seconds=self.settings.context_s))
        for r in self._rows(q.last_starts, params):
            b = arrivals.get(r["entity_id"])
            if b is None:
                continue
            last = _utc(r["last_start"])
            sigma = max(b.mad_ms * d.MAD_TO_SIGMA, b.median_ms * 0.02, 1000.0)
            due = b.median_ms + self.settings.missed_start_sigmas * sigma
            since = (end - last).total_seconds() * 1000
            if not since >= due > (start - last).total_seconds() * 1000:
                continue
            log_p = d.missed_start_log_p(since / 1000, b.median_ms / 1000, b.mad_ms / 1000)
            if self._significant(log_p):
                yield self._deviation(
                    b, start, end, metric="missed_start", baseline_value=b.median_ms,
                    observed_value=since, samples=0, log_p=log_p,
                    detail={"last_start": last.isoformat(), "first_step": r["first_step"]},
                )  # fmt: skip

    # -- reading ------------------------------------------------------------------------

    def deviations(
        self, since: datetime | None = None, *, limit: int = 50, entity_id: str = ""
    ) -> list[dict[str, Any]]:
        """Stored deviations, the most surprising first."""
        where = ["1"]
        params: dict[str, Any] = {"limit": limit}
        if since is not None:
            where.append("window_end >= toDateTime64(%(since)s, 3, 'UTC')")
            params["since"] = _text(_utc(since))
        if entity_id:
            where.append("entity_id = %(entity)s")
            params["entity"] = entity_id
        rows = self._ledger.named_rows(
            f"SELECT * EXCEPT detected_at FROM {self._db}.{names.TABLE_DEVIATIONS} FINAL "
            f"WHERE {' AND '.join(where)} ORDER BY surprise_bits DESC, deviation_id "
            "LIMIT %(limit)s",
            params,
        )
        for r in rows:
            r["window_start"] = _utc(r["window_start"]).isoformat()
            r["window_end"] = _utc(r["window_end"]).isoformat()
            r["detail"] = json.loads(r["detail"] or "{}")
            if isinstance(r["p_value"], float) and math.isnan(r["p_value"]):
                r["p_value"] = None
        return rows

    def _rows(self, query: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
        return self._ledger.named_rows(query(self._db), params)
