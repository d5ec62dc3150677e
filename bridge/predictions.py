"""`entropy.predicted`: when a step of a run is observed, what should come next and when,
from the step's baseline, for consumers that watch runs in flight.

One message per observed step that has a baseline and is not usually a run's last: the
most likely next step and its probability, every next step's probability (`$end`: the
run stops), and the expected time window (the baseline's p10 and p90 of the gap to the
next step), also as absolute times. Key: the entity id; the event id is derived from the
observation's and the baseline's, so while the baseline stays, a redelivered observation
gives the same message, byte for byte.
"""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import UTC, datetime, timedelta

from bridge.entropy import Baseline, Scanner
from bridge.entropy_queries import END, GAP_QUANTILES
from bridge.ledger import Ledger
from karma.envelope import Envelope, EventSource
from karma.settings import EntropySettings

log = logging.getLogger(__name__)
PREDICTED_EVENT = "entropy.predicted"
REFRESH_SECONDS = 300.0  # baselines change once a day: read them every few minutes...
MISS_REFRESH_SECONDS = 5.0  # ...and soon after a step without one (a new entity)


def prediction(observation: Envelope, baseline: Baseline) -> Envelope | None:
    """What the baseline expects after `observation`; None when it expects nothing."""
    counts = baseline.nexts
    total = sum(counts.values())
    following = {k: v for k, v in counts.items() if k != END}
    if not following or total <= 0 or len(baseline.gaps) != len(GAP_QUANTILES):
        return None
    expected, count = max(sorted(following.items()), key=lambda kv: kv[1])
    low, high = baseline.gap(0.1), baseline.gap(0.9)
    key = f"{observation.event_id}\x1f{baseline.window_end.isoformat()}"
    return Envelope(
        event_id="pred_" + hashlib.sha256(key.encode()).hexdigest()[:32],
        ts=observation.ts,
        event_type=PREDICTED_EVENT,
        entity_id=observation.entity_id,
        correlation_id=observation.correlation_id,
        source=EventSource(system="karma.entropy"),
        attrs={
            "step": baseline.step,
            "observation_id": observation.event_id,
            "expected_next": expected,
            "probability": round(count / total, 6),
            "next_steps": {k: round(v / total, 6) for k, v in sorted(counts.items())},
            "expected_after_ms": [low, high],
            "expected_between": [
                (observation.ts + timedelta(milliseconds=low)).isoformat(),
                (observation.ts + timedelta(milliseconds=high)).isoformat(),
            ],
            "baseline_window_end": baseline.window_end.isoformat(),
        },
    )


class Predictor:
    """Baselines kept in memory (read again every REFRESH_SECONDS) and the predictions of
    a batch of observations. Blocking: called from the sink's database thread."""

    def __init__(self, settings: EntropySettings) -> None:
        self._settings = settings
        self._baselines: dict[tuple[str, str], Baseline] = {}
        self._misses: set[tuple[str, str]] = set()  # steps seen without a baseline
        self._read_at = -REFRESH_SECONDS

    def predictions(self, ledger: Ledger, observations: list[Envelope]) -> list[Envelope]:
        steps = [
            (o, (o.entity_id, step))
            for o in observations
            if isinstance(step := o.attrs.get("step"), str)
        ]
        age = time.monotonic() - self._read_at
        # A step without a baseline may have got one since (a new entity): read again
        # soon, but only for steps not already known to have none.
        new_misses = {key for _, key in steps if key not in self._baselines} - self._misses
        if age >= REFRESH_SECONDS or (new_misses and age >= MISS_REFRESH_SECONDS):
            self._read_at = time.monotonic()
            found = Scanner(ledger, self._settings).baselines(datetime.now(UTC))
            self._baselines = {(b.entity_id, b.step): b for b in found}
            # Known to have none as of this read (until the next full one).
            self._misses = {key for _, key in steps if key not in self._baselines}
        out = []
        for o, key in steps:
            baseline = self._baselines.get(key)
            if baseline is not None and (p := prediction(o, baseline)) is not None:
                out.append(p)
        return out
