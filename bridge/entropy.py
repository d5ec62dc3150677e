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

import json
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge import entropy_queries as q
from bridge.entropy_detect import Detector
from bridge.entropy_model import (
    BASELINE_COLUMNS,
    DEVIATION_COLUMNS,
    DEVIATION_EVENT,
    Baseline,
    Deviation,
    ScanResult,
    finite,
    gaps_of,
    text,
    utc,
)
from bridge.ledger import Ledger
from karma import names
from karma.settings import EntropySettings

ENTROPY_MIGRATION = 6  # the ledger migration that made the tables read here
__all__ = ["DEVIATION_EVENT", "Baseline", "Deviation", "ScanResult", "Scanner"]
MAX_BATCH_WINDOWS = 48  # windows found in one pass (a catch-up, a backfill)
LEARN_CONTEXT_MS = 10**15  # learning reads no context: every earlier step counts


def _latency_fields(lat: dict[str, Any]) -> dict[str, Any]:
    counts = dict(zip(*lat["buckets"], strict=True))
    edges = [float(e) for e in lat["bucket_edges_ms"]]
    return {
        "samples": int(lat["samples"]),
        "median_ms": float(lat["median_ms"]),
        "mad_ms": float(lat["mad_ms"]),
        "log_median": float(lat["log_median"]),
        "log_mad": float(lat["log_mad"]),
        "log_std": finite(lat["log_std"]),
        "p10_ms": float(lat["tails"][0]),
        "p90_ms": float(lat["tails"][1]),
        "p99_ms": float(lat["tails"][2]),
        "bucket_edges_ms": edges,
        "bucket_counts": [int(counts.get(i, 0)) for i in range(1, len(edges) + 2)],
        "latency_entropy_bits": float(lat["latency_entropy_bits"]),
    }


class Scanner:
    """Baselines and deviations over one ledger's observations."""

    def __init__(
        self,
        ledger: Ledger,
        settings: EntropySettings,
        *,
        query_settings: dict[str, Any] | None = None,
    ) -> None:
        self.ledger = self._ledger = ledger
        self._db = ledger.database
        self.settings = settings
        self._query_settings = query_settings  # the API's: a time limit
        self.learn_seconds = 0.0  # spent learning baselines (the benchmark reports it)

    @property
    def window(self) -> timedelta:
        return timedelta(seconds=self.settings.scan_window_s)

    # -- baselines ----------------------------------------------------------------------

    def learn(self, until: datetime, *, store: bool = True) -> list[Baseline]:
        """Learn baselines over the training window before `until` (and store them)."""
        began = time.monotonic()
        try:
            return self._learn(until, store=store)
        finally:
            self.learn_seconds += time.monotonic() - began

    def _learn(self, until: datetime, *, store: bool) -> list[Baseline]:
        until = utc(until)
        start = until - timedelta(seconds=self.settings.training_window_s)
        params = {
            "context": text(start),
            "start": text(start),
            "end": text(until),
            "settled": text(until - self.window),
            "window_ms": int(self.window.total_seconds() * 1000),
            "context_ms": LEARN_CONTEXT_MS,
        }
        latency = {(r["entity_id"], r["step"]): r for r in self._rows(q.baseline_latency, params)}
        sequence = {(r["entity_id"], r["step"]): r for r in self._rows(q.baseline_sequence, params)}
        learned: list[Baseline] = []
        minimum = self.settings.min_baseline_samples
        for key in sorted(set(latency) | set(sequence)):
            lat, seq = latency.get(key, {}), sequence.get(key, {})
            # A step without enough latencies (a run's first, when the source sends no
            # duration) still has its sequence learned.
            timed = int(lat.get("samples", 0)) >= minimum
            if not timed and int(seq.get("occurrences", 0)) < minimum:
                continue
            nexts = dict(zip(*seq.get("nexts", ([], [])), strict=True))
            seen = dict(zip(*seq.get("window_nexts", ([], [])), strict=True))
            learned.append(
                Baseline(
                    entity_id=key[0], step=key[1], window_start=start, window_end=until,
                    **(_latency_fields(lat) if timed else {"samples": 0, "median_ms": 0.0,
                                                           "mad_ms": 0.0}),
                    next_steps=sorted(nexts), next_counts=[int(nexts[s]) for s in sorted(nexts)],
                    next_entropy_bits=finite(seq.get("next_entropy_bits", 0.0)),
                    window_next_steps=sorted(seen),
                    window_next_counts=[int(seen[s]) for s in sorted(seen)],
                    gaps=gaps_of(seq.get("gaps", [])),
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
        rows = self._rows(q.current_baselines, {"before": text(utc(before))})
        out = []
        for r in rows:
            if entity_id and r["entity_id"] != entity_id:
                continue
            values = dict(zip(BASELINE_COLUMNS[2:], r["b"], strict=True))
            values["window_start"] = utc(values["window_start"])
            values["window_end"] = utc(values["window_end"])
            out.append(Baseline(entity_id=r["entity_id"], step=r["step"], **values))
        return sorted(out, key=lambda b: (b.entity_id, b.step))

    # -- scans --------------------------------------------------------------------------

    def pending_windows(self, now: datetime) -> list[tuple[datetime, datetime]]:
        """The whole windows between the last one scanned and `now` less `grace_s` (late
        observations still on their way count), the latest `max_windows_per_scan` of
        them; a first scan takes the last such window."""
        size = self.window
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        settled = utc(now) - timedelta(seconds=self.settings.grace_s)
        last_end = epoch + ((settled - epoch) // size) * size
        done = self._ledger.rows(
            f"SELECT max(window_end) FROM {self._db}.{names.TABLE_SCANS} "
            "WHERE window_end <= toDateTime64(%(now)s, 3, 'UTC')",
            {"now": text(last_end)},
        )
        previous = utc(done[0][0]) if done and done[0][0].year > 1970 else last_end - size
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
        start = epoch + -((epoch - utc(since)) // size) * size  # rounded up
        windows = []
        while start + size <= utc(until):
            windows.append((start, start + size))
            start += size
        return windows

    def scan(self, now: datetime, *, dry_run: bool = False) -> ScanResult:
        """Scan every pending window; store (unless `dry_run`) deviations and progress."""
        began = time.monotonic()
        result = ScanResult()
        for start, end, found, seen, learned in self.detect_many(self.pending_windows(now)):
            if not dry_run:
                self.store(found)
                self.mark_scanned(start, end, found, seen)
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
        (and stored) for it: they are due once `relearn_every_s` passed.

        Raises:
            ValueError: a window that is not one of the scan's (aligned to the epoch,
                `scan_window_s` long).
        """
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        if (utc(start) - epoch) % self.window or utc(end) - utc(start) != self.window:
            raise ValueError(
                f"[{start}, {end}) is not a scan window: {self.window} long, from the epoch"
            )
        found = self.detect_many([(start, end)])
        return found[0][2], found[0][3], found[0][4]

    def detect_many(
        self, windows: list[tuple[datetime, datetime]]
    ) -> list[tuple[datetime, datetime, list[Deviation], int, int]]:
        """(start, end, deviations, observations, baselines learned) of consecutive
        windows, as scanning them one by one would give, in few passes: the windows that
        share their baselines are found together."""
        out: list[tuple[datetime, datetime, list[Deviation], int, int]] = []
        relearn = timedelta(seconds=self.settings.relearn_every_s)
        detector = Detector(self._ledger, self.settings, self.window)
        i = 0
        while i < len(windows):
            first = windows[i][0]
            current, learned = self._current(first)
            newest = max((b.window_end for b in current.values()), default=first)
            batch = [w for w in windows[i : i + MAX_BATCH_WINDOWS] if w[0] < newest + relearn] or [
                windows[i]
            ]
            found = detector.detect(batch, current)
            for n, (start, end) in enumerate(batch):
                deviations, seen = found[start]
                out.append((start, end, deviations, seen, learned if n == 0 else 0))
            i += len(batch)
        return out

    def _current(self, start: datetime) -> tuple[dict[tuple[str, str], Baseline], int]:
        """The baselines for a window starting at `start`, learned first when due."""
        current = {(b.entity_id, b.step): b for b in self.baselines(start)}
        relearn = timedelta(seconds=self.settings.relearn_every_s)
        if current and max(b.window_end for b in current.values()) > start - relearn:
            return current, 0
        fresh = self.learn(start)
        current.update({(b.entity_id, b.step): b for b in fresh})
        return current, len(fresh)

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

    # -- reading ------------------------------------------------------------------------

    def deviations(
        self, since: datetime | None = None, *, limit: int = 50, entity_id: str = ""
    ) -> list[dict[str, Any]]:
        """Stored deviations, the most surprising first."""
        where = ["1"]
        params: dict[str, Any] = {"limit": limit}
        if since is not None:
            where.append("window_end >= toDateTime64(%(since)s, 3, 'UTC')")
            params["since"] = text(utc(since))
        if entity_id:
            where.append("entity_id = %(entity)s")
            params["entity"] = entity_id
        rows = self._ledger.named_rows(
            f"SELECT * EXCEPT detected_at FROM {self._db}.{names.TABLE_DEVIATIONS} FINAL "
            f"WHERE {' AND '.join(where)} ORDER BY surprise_bits DESC, deviation_id "
            "LIMIT %(limit)s",
            params,
            settings=self._query_settings,
        )
        for r in rows:
            r["window_start"] = utc(r["window_start"]).isoformat()
            r["window_end"] = utc(r["window_end"]).isoformat()
            r["detail"] = json.loads(r["detail"] or "{}")
            if isinstance(r["p_value"], float) and math.isnan(r["p_value"]):
                r["p_value"] = None
        return rows

    def check_ready(self) -> None:
        """Raise unless the ledger has the entropy layer's tables.

        Raises:
            karma.errors.LedgerUnavailableError: a ledger not migrated that far yet.
        """
        self._ledger.require_migration(ENTROPY_MIGRATION, "reading the entropy layer")

    def _rows(self, query: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
        return self._ledger.named_rows(query(self._db), params, settings=self._query_settings)
