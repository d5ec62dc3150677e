"""The entropy layer's records: a baseline (what normal looks like for one entity and
step) and a deviation (a window that stopped looking like it), as rows, JSON and
envelopes."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bridge import entropy_queries as q
from karma.envelope import Envelope, EventSource

DEVIATION_EVENT: str = "entropy.deviation"
BASELINE_COLUMNS = [
    "entity_id", "step", "window_start", "window_end", "samples", "median_ms", "mad_ms",
    "log_median", "log_mad", "log_std", "p10_ms", "p90_ms", "p99_ms", "bucket_edges_ms",
    "bucket_counts", "latency_entropy_bits", "next_steps", "next_counts",
    "next_entropy_bits", "window_next_steps", "window_next_counts", "gaps",
]  # fmt: skip
DEVIATION_COLUMNS = [
    "deviation_id", "entity_id", "step", "metric", "window_start", "window_end",
    "baseline_value", "observed_value", "samples", "baseline_samples", "surprise_bits",
    "p_value", "detail",
]  # fmt: skip


def text(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.") + f"{ts.microsecond // 1000:03d}"


def finite(value: Any) -> float:
    number = float(value)
    return 0.0 if math.isnan(number) or math.isinf(number) else number


def gaps_of(quantiles: list[float]) -> list[float]:
    """The gap quantiles, or none when no step followed (ClickHouse gives NaN)."""
    values = [float(g) for g in quantiles]
    return [] if any(math.isnan(g) for g in values) else values


def utc(ts: datetime) -> datetime:
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
    # The next steps as a scan window sees them (one that came after the window ended is
    # not counted): what a window's sequence is compared with.
    window_next_steps: list[str] = field(default_factory=list)
    window_next_counts: list[int] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)  # q.GAP_QUANTILES of the gap after it

    def gap(self, quantile: float) -> float:
        """A quantile (one of q.GAP_QUANTILES) of the time to the next step."""
        return self.gaps[q.GAP_QUANTILES.index(quantile)]

    @property
    def buckets(self) -> dict[str, float]:
        return {str(i + 1): float(c) for i, c in enumerate(self.bucket_counts)}

    @property
    def window_nexts(self) -> dict[str, float]:
        pairs = zip(self.window_next_steps, self.window_next_counts, strict=True)
        return {s: float(c) for s, c in pairs}

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
        key = f"{self.entity_id}\x1f{self.step}\x1f{self.metric}\x1f{text(self.window_start)}"
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
