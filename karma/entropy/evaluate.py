"""Scoring a scan against a simulation's truth: recall, precision, detection delay and
false alarms, per anomaly kind.

A deviation finds an anomaly when it names the anomaly's entity, with a metric that finds
its kind (`simulate.EXPECTED_METRICS`), in a window that ends after the anomaly started
and starts before it ended (plus two windows: a stuck run or a missed start is only
overdue later). Any other deviation is a false alarm.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from karma.entropy.simulate import EXPECTED_METRICS, KINDS, Anomaly


@dataclass
class KindScore:
    anomalies: int = 0
    found: int = 0
    delays: list[int] = field(default_factory=list)  # in scan windows, from the start

    @property
    def recall(self) -> float:
        return self.found / self.anomalies if self.anomalies else math.nan


@dataclass
class Score:
    kinds: dict[str, KindScore]
    true_positives: int
    false_alarms: int
    missed: list[Anomaly]
    false: list[dict[str, Any]]

    @property
    def recall(self) -> float:
        total = sum(k.anomalies for k in self.kinds.values())
        return sum(k.found for k in self.kinds.values()) / total if total else math.nan

    @property
    def precision(self) -> float:
        total = self.true_positives + self.false_alarms
        return self.true_positives / total if total else math.nan

    def max_delay(self) -> int:
        return max((d for k in self.kinds.values() for d in k.delays), default=0)


def _matches(anomaly: Anomaly, deviation: dict[str, Any], window: timedelta) -> bool:
    start, end = _time(deviation["window_start"]), _time(deviation["window_end"])
    return (
        deviation["entity_id"] == anomaly.entity_id
        and deviation["metric"] in EXPECTED_METRICS[anomaly.kind]
        and end > anomaly.start
        and start < anomaly.end + 2 * window
    )


def _time(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def score(
    truth: Sequence[Anomaly], deviations: Iterable[dict[str, Any]], window: timedelta
) -> Score:
    """How well `deviations` (as `Deviation.as_json` gives them) find `truth`."""
    kinds = {k: KindScore() for k in KINDS}
    found: set[int] = set()
    devs = list(deviations)
    true_positive = [False] * len(devs)
    missed = []
    for anomaly in truth:
        kinds[anomaly.kind].anomalies += 1
        hits = [i for i, dev in enumerate(devs) if _matches(anomaly, dev, window)]
        for i in hits:
            true_positive[i] = True
        if not hits:
            missed.append(anomaly)
            continue
        found.add(id(anomaly))
        kinds[anomaly.kind].found += 1
        first = min(_time(devs[i]["window_end"]) for i in hits)
        kinds[anomaly.kind].delays.append(max(1, math.ceil((first - anomaly.start) / window)))
    # A deviation on an anomalous entity while its anomaly lasts is not a false alarm
    # even when another metric noticed it (a skipped step also shifts latencies).
    for i, dev in enumerate(devs):
        if not true_positive[i]:
            true_positive[i] = any(
                dev["entity_id"] == a.entity_id
                and _time(dev["window_end"]) > a.start
                and _time(dev["window_start"]) < a.end + 2 * window
                for a in truth
            )
    false = [dev for i, dev in enumerate(devs) if not true_positive[i]]
    return Score(kinds, sum(true_positive), len(false), missed, false)
