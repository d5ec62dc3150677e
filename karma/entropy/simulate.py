"""Observation streams with known answers: many entities running multi-step processes,
periodic or not, with skewed (log-normal) step latencies and branching step sequences,
and anomalies of known kind, entity, step and time injected into them.

Seeded: the same scenario always gives the same observations and the same truth.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

STEPS = ("receive", "validate", "reserve", "ship", "confirm")
BRANCH = "review"  # taken after `validate` by some runs of branching processes
KINDS = (
    "latency_drift",
    "variance_blowup",
    "skipped_step",
    "reordered_steps",
    "stuck_run",
    "missed_start",
)
# The metrics that find each kind.
EXPECTED_METRICS: dict[str, tuple[str, ...]] = {
    "latency_drift": ("latency_shift", "latency_spread"),
    "variance_blowup": ("latency_spread", "latency_shift"),
    "skipped_step": ("sequence_change",),
    "reordered_steps": ("sequence_change",),
    "stuck_run": ("overdue",),
    "missed_start": ("missed_start",),
}
EVENT_TYPE = "process.step"
SOURCE = "karma.simulate"


@dataclass(frozen=True)
class Scenario:
    entities: int = 200
    days: float = 14.0
    period_s: float = 300.0  # a run every 5 minutes
    anomalies: int = 20
    anomaly_after_days: float = 8.0  # anomalies start after the baselines have history
    anomaly_hours: float = 6.0
    seed: int = 7
    prefix: str = "entity"  # entity ids are `<prefix>-0000`, ...
    start: datetime = datetime(2026, 11, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)


@dataclass(frozen=True)
class Anomaly:
    kind: str
    entity_id: str
    step: str
    start: datetime
    end: datetime

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "start": self.start.isoformat(), "end": self.end.isoformat()}


@dataclass
class Process:
    """One entity's process: how its steps take time and in which order they come."""

    entity_id: str
    median_ms: dict[str, float]
    sigma: dict[str, float]
    periodic: bool
    branching: float  # share of runs that take BRANCH after `validate`
    knows_durations: bool  # else the consumer takes the time since the previous step
    anomalies: list[Anomaly] = field(default_factory=list)


def _processes(s: Scenario, rng: np.random.Generator) -> list[Process]:
    out = []
    for i in range(s.entities):
        steps = (*STEPS, BRANCH)
        out.append(
            Process(
                entity_id=f"{s.prefix}-{i:04d}",
                median_ms={k: float(rng.uniform(200, 20_000)) for k in steps},
                sigma={k: float(rng.uniform(0.15, 0.45)) for k in steps},
                periodic=bool(rng.random() < 0.7),
                branching=float(rng.choice([0.0, 0.0, 0.2, 0.35])),
                knows_durations=bool(rng.random() < 0.5),
            )
        )
    return out


def _inject(s: Scenario, processes: list[Process], rng: np.random.Generator) -> list[Anomaly]:
    """`s.anomalies` anomalies, spread over kinds, entities and the later days."""
    chosen = rng.choice(len(processes), size=min(s.anomalies, len(processes)), replace=False)
    truth = []
    span = (s.days - s.anomaly_after_days) * 86400 - s.anomaly_hours * 3600
    for n, index in enumerate(chosen):
        process = processes[int(index)]
        kind = KINDS[n % len(KINDS)]
        if kind == "missed_start" and not process.periodic:
            process.periodic = True
        begin = s.start + timedelta(days=s.anomaly_after_days, seconds=float(rng.uniform(0, span)))
        step = {
            "latency_drift": STEPS[2],
            "variance_blowup": STEPS[3],
            "skipped_step": STEPS[1],  # `reserve` no longer follows `validate`
            "reordered_steps": STEPS[2],  # `ship` comes before `reserve`
            "stuck_run": STEPS[1],
            "missed_start": STEPS[0],
        }[kind]
        anomaly = Anomaly(
            kind, process.entity_id, step, begin, begin + timedelta(hours=s.anomaly_hours)
        )
        process.anomalies.append(anomaly)
        truth.append(anomaly)
    return sorted(truth, key=lambda a: (a.start, a.entity_id))


def _active(process: Process, kind: str, at: datetime) -> Anomaly | None:
    for a in process.anomalies:
        if a.kind == kind and a.start <= at < a.end:
            return a
    return None


def _run(
    process: Process, run_id: str, started: datetime, rng: np.random.Generator
) -> Iterator[dict[str, Any]]:
    """The observations of one run: one per step, at the step's end."""
    order = list(STEPS)
    if rng.random() < process.branching:
        order.insert(2, BRANCH)
    if _active(process, "skipped_step", started):
        order.remove(STEPS[2])
    if _active(process, "reordered_steps", started):
        i, j = order.index(STEPS[2]), order.index(STEPS[3])
        order[i], order[j] = order[j], order[i]
    stuck = _active(process, "stuck_run", started)
    at = started
    for step in order:
        median, sigma = process.median_ms[step], process.sigma[step]
        if (a := _active(process, "latency_drift", started)) and a.step == step:
            median *= 2.5
        if (a := _active(process, "variance_blowup", started)) and a.step == step:
            sigma *= 4.0
        duration = float(median * np.exp(rng.normal(0.0, sigma)))
        at += timedelta(milliseconds=duration)
        attrs: dict[str, Any] = {"step": step, "status": "ok"}
        if process.knows_durations:
            attrs["duration_ms"] = round(duration)
        yield {"ts": at, "entity_id": process.entity_id, "correlation_id": run_id, "attrs": attrs}
        if stuck and step == stuck.step:
            return  # the run went silent


def observations(s: Scenario) -> tuple[list[dict[str, Any]], list[Anomaly]]:
    """(observations in time order, the anomalies injected) of a scenario."""
    rng = np.random.default_rng(s.seed)
    processes = _processes(s, rng)
    truth = _inject(s, processes, rng)
    out: list[dict[str, Any]] = []
    for process in processes:
        offset = float(rng.uniform(0, s.period_s))
        at = s.start + timedelta(seconds=offset)
        stuck_done = False  # a stuck run is one run: the later ones go on
        run = 0
        while at < s.end:
            if not _active(process, "missed_start", at):
                stuck = _active(process, "stuck_run", at) is not None
                runs = process if stuck and not stuck_done else _without(process, "stuck_run")
                out.extend(_run(runs, f"{process.entity_id}-run-{run:06d}", at, rng))
                stuck_done = stuck_done or stuck
                run += 1
            jitter = s.period_s * (1 + rng.normal(0, 0.01))
            gap = jitter if process.periodic else rng.exponential(s.period_s)
            at += timedelta(seconds=float(max(gap, 1.0)))
    out = [o for o in out if o["ts"] < s.end]
    out.sort(key=lambda o: (o["ts"], o["entity_id"]))
    return out, truth


def _without(process: Process, kind: str) -> Process:
    return Process(
        **{**process.__dict__, "anomalies": [a for a in process.anomalies if a.kind != kind]}
    )


def event_id(o: dict[str, Any]) -> str:
    key = f"{o['correlation_id']}\x1f{o['attrs']['step']}\x1f{o['ts'].isoformat()}"
    return "sim_" + hashlib.sha256(key.encode()).hexdigest()[:32]


def envelope(o: dict[str, Any]) -> dict[str, Any]:
    """An observation as a JSON document for `events.normalized`."""
    return {
        "event_id": event_id(o),
        "ts": o["ts"].isoformat().replace("+00:00", "Z"),
        "event_type": EVENT_TYPE,
        "entity_id": o["entity_id"],
        "correlation_id": o["correlation_id"],
        "source": {"system": SOURCE},
        "attrs": o["attrs"],
    }


def row(o: dict[str, Any]) -> list[Any]:
    """An `observations` row (for runs too large to send through Kafka)."""
    attrs = o["attrs"]
    return [
        event_id(o), o["ts"], EVENT_TYPE, o["entity_id"], o["correlation_id"], attrs["step"],
        attrs["status"], attrs.get("duration_ms"), SOURCE, {},
        json.dumps(attrs, separators=(",", ":"), sort_keys=True), "", 0, 0,
    ]  # fmt: skip
