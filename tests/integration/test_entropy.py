"""The entropy layer against the real ClickHouse engine (chdb): baselines with known
answers, a seeded simulation whose anomalies are all found while its quiet entities raise
nothing, and rescans that never duplicate a deviation."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.entropy import Scanner
from bridge.entropy_queries import END, START
from bridge.ledger import Ledger
from bridge.ledger_schema import OBSERVATION_INSERT_COLUMNS
from bridge.topic_reader import read_topics
from karma import names
from karma.entropy import detectors, evaluate, simulate
from karma.settings import EntropySettings
from tests.conftest import unique
from tests.support.kafka import produce
from tests.support.processes import karma_env, run_karma
from workers.embedded import EmbeddedKarma

HOUR = timedelta(hours=1)


def insert(ledger: Ledger, observations: list[dict[str, Any]]) -> None:
    rows = [simulate.row(o) for o in observations]
    ledger.insert_rows(names.TABLE_OBSERVATIONS, rows, list(OBSERVATION_INSERT_COLUMNS))


def mine(prefix: str, deviations: list[Any]) -> list[dict[str, Any]]:
    return [d.as_json() for d in deviations if d.entity_id.startswith(prefix)]


async def test_a_baseline_learned_from_known_latencies(karma: EmbeddedKarma) -> None:
    """40 runs of `a` (durations 100..139 ms) then `b` or, one run in four, `c`."""
    entity = unique("known")
    start = datetime(2025, 3, 1, tzinfo=UTC)
    observations = []
    for run in range(40):
        at = start + timedelta(minutes=10 * run)
        second = "c" if run % 4 == 0 else "b"
        for offset, step, duration in ((0, "a", 100 + run), (5, second, 50)):
            observations.append(
                {
                    "ts": at + timedelta(seconds=offset),
                    "entity_id": entity,
                    "correlation_id": f"{entity}-{run}",
                    "attrs": {"step": step, "status": "ok", "duration_ms": duration},
                }
            )
    await asyncio.to_thread(insert, karma.ledger, observations)
    scanner = Scanner(karma.ledger, EntropySettings(training_window_s=86400))
    learned = await asyncio.to_thread(scanner.learn, start + timedelta(days=1))
    a = next(b for b in learned if b.entity_id == entity and b.step == "a")
    assert a.samples == 40
    assert a.median_ms == 119.5  # the median of 100..139
    assert a.mad_ms == 10.0  # |100..139 - 119.5| = 0.5 .. 19.5: median 10
    # 8 buckets from quantiles 0.05 .. 0.95; ClickHouse's entropy() of the bucket numbers
    # equals Shannon's over their shares
    assert len(a.bucket_edges_ms) == 7 and sum(a.bucket_counts) == 40
    shares = [c / 40 for c in a.bucket_counts]
    assert a.latency_entropy_bits == detectors.entropy_bits(shares)
    # `a` is followed by `b` 30 times and `c` 10 times: H(0.75, 0.25) = 0.811278 bits
    assert dict(zip(a.next_steps, a.next_counts, strict=True)) == {"b": 30, "c": 10}
    assert math.isclose(a.next_entropy_bits, 0.811278, abs_tol=1e-6)
    assert a.gaps[0] == 5000.0  # the next step always came 5 s later
    # `b` and `c` end their runs; the runs start every 10 minutes
    b = next(x for x in learned if x.entity_id == entity and x.step == "b")
    assert b.next_steps == [END] and b.next_counts == [30]
    arrival = next(x for x in learned if x.entity_id == entity and x.step == START)
    assert (arrival.samples, arrival.median_ms, arrival.mad_ms) == (39, 600_000.0, 0.0)
    stored = await asyncio.to_thread(scanner.baselines, start + timedelta(days=1), entity)
    mine_learned = sorted((x for x in learned if x.entity_id == entity), key=lambda x: x.step)
    assert [x.as_json() for x in stored] == [x.as_json() for x in mine_learned]


async def test_a_seeded_simulation_is_found_and_its_quiet_entities_raise_nothing(
    karma: EmbeddedKarma, report: Callable[[str], None]
) -> None:
    prefix = unique("sim")
    scenario = simulate.Scenario(
        entities=12,
        days=4,
        anomalies=6,
        anomaly_after_days=2.5,
        anomaly_hours=4,
        seed=11,
        prefix=prefix,
        start=datetime(2025, 6, 1, tzinfo=UTC),
    )
    observations, truth = simulate.observations(scenario)
    assert sorted(a.kind for a in truth) == sorted(simulate.KINDS)
    await asyncio.to_thread(insert, karma.ledger, observations)
    settings = EntropySettings(training_window_s=2 * 86400)
    scanner = Scanner(karma.ledger, settings)
    first = scenario.start + timedelta(days=2.5)
    windows = [(first + n * HOUR, first + (n + 1) * HOUR) for n in range(36)]

    def scan_all() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for start, end in windows:
            found.extend(mine(prefix, scanner.scan_window(start, end)[0]))
        return found

    found = await asyncio.to_thread(scan_all)
    score = evaluate.score(truth, found, scanner.window)
    assert not score.missed, score.missed
    assert score.false_alarms == 0, score.false
    assert score.max_delay() <= 2, {k: v.delays for k, v in score.kinds.items()}
    anomalous = {a.entity_id for a in truth}
    assert {d["entity_id"] for d in found} <= anomalous
    # Ranked by surprise, deterministic ids: a rescan writes the same rows again.
    again = await asyncio.to_thread(scan_all)
    assert sorted(d["deviation_id"] for d in again) == sorted(d["deviation_id"] for d in found)
    stored = await asyncio.to_thread(
        scanner.deviations, scenario.start, limit=1000, entity_id=found[0]["entity_id"]
    )
    assert len({r["deviation_id"] for r in stored}) == len(stored)
    assert [r["surprise_bits"] for r in stored] == sorted(
        (r["surprise_bits"] for r in stored), reverse=True
    )
    kinds = ", ".join(f"{k} {v.found}/{v.anomalies} in {v.delays}" for k, v in score.kinds.items())
    report(
        f"simulation: {len(observations)} observations, {len(truth)} anomalies, "
        f"{len(found)} deviations, 0 false alarms; {kinds} windows"
    )


async def test_a_deviation_as_published(karma: EmbeddedKarma) -> None:
    """The envelope on `entropy.deviation` carries what an operator needs to act."""
    prefix = unique("pub")
    start = datetime(2025, 9, 1, tzinfo=UTC)
    scenario = simulate.Scenario(
        entities=2, days=3, anomalies=1, anomaly_after_days=2.2, seed=3, prefix=prefix, start=start
    )
    observations, truth = simulate.observations(scenario)
    await asyncio.to_thread(insert, karma.ledger, observations)
    scanner = Scanner(karma.ledger, EntropySettings(training_window_s=2 * 86400))
    anomaly = truth[0]
    window = anomaly.start.replace(minute=0, second=0, microsecond=0)
    found: list[Any] = []
    for n in range(3):
        a = window + n * HOUR
        found.extend(
            d
            for d in (await asyncio.to_thread(scanner.scan_window, a, a + HOUR))[0]
            if d.entity_id.startswith(prefix)
        )
    assert found, truth
    envelope = json.loads(found[0].envelope().model_dump_json())
    assert envelope["event_type"] == "entropy.deviation"
    assert envelope["event_id"] == found[0].deviation_id == envelope["correlation_id"]
    assert envelope["entity_id"] == anomaly.entity_id
    attrs = envelope["attrs"]
    for key in ("step", "metric", "baseline_value", "observed_value", "window_start"):
        assert key in attrs
    assert attrs["surprise_bits"] >= 8 and 0 <= attrs["p_value"] < 0.01


async def test_the_scan_workflow_stores_publishes_and_runs_on_a_schedule(
    karma: EmbeddedKarma, report: Callable[[str], None]
) -> None:
    """A backfill through EntropyScanWorkflow (as `karma entropy scan --since` starts it)
    stores the deviations once, publishes each to `entropy.deviation` for a plain
    consumer, and the Temporal Schedule that runs the scan exists with its interval."""
    prefix = unique("wf")
    start = datetime(2025, 12, 1, tzinfo=UTC)
    scenario = simulate.Scenario(
        entities=3, days=3, anomalies=1, anomaly_after_days=2.3, seed=5, prefix=prefix, start=start
    )
    observations, truth = simulate.observations(scenario)
    await asyncio.to_thread(insert, karma.ledger, observations)
    anomaly = truth[0]
    env = karma_env(karma.settings)
    since = anomaly.start.replace(minute=0, second=0, microsecond=0)
    window = ["--since", since.isoformat(), "--until", (since + 3 * HOUR).isoformat()]
    code, out = await run_karma(["entropy", "scan", *window, "--dry-run", "--json"], env)
    assert code == 0, out
    dry = json.loads(out)
    assert len(dry["windows"]) == 3 and dry["published"] == 0
    assert any(d["entity_id"] == anomaly.entity_id for d in dry["top"]), json.dumps(dry)[:3000]
    scanner = Scanner(karma.ledger, karma.settings.entropy)
    stored = await asyncio.to_thread(scanner.deviations, since, entity_id=anomaly.entity_id)
    assert stored == []  # a dry run stores nothing
    for _ in range(2):  # a second backfill of the same windows adds nothing
        code, out = await run_karma(["entropy", "scan", *window, "--json"], env)
        assert code == 0, out
    scan = json.loads(out)
    ours = [d for d in scan["top"] if d["entity_id"].startswith(prefix)]
    assert ours and scan["published"] >= len(ours)
    stored = await asyncio.to_thread(scanner.deviations, since, entity_id=anomaly.entity_id)
    assert sorted(r["deviation_id"] for r in stored) == sorted(
        d["deviation_id"] for d in ours if d["entity_id"] == anomaly.entity_id
    )
    topic = karma.settings.kafka.topics.deviations
    messages = [
        m
        for m in await read_topics(karma.settings.kafka, [topic])
        if m.key is not None and m.key.decode().startswith(prefix)
    ]
    copies: dict[str, set[bytes]] = {}
    for m in messages:
        assert m.value is not None
        copies.setdefault(json.loads(m.value)["event_id"], set()).add(m.value)
    assert set(copies) == {d["deviation_id"] for d in ours}
    assert all(len(values) == 1 for values in copies.values())  # each copy byte-identical
    args = ["entropy", "deviations", "--entity", anomaly.entity_id, "--since", since.isoformat()]
    code, out = await run_karma([*args, "--json"], env)
    assert code == 0, out
    assert [r["deviation_id"] for r in json.loads(out)] == [r["deviation_id"] for r in stored]
    code, out = await run_karma(args, env)
    assert code == 0 and "bits" in out and "Deviations, most surprising first" in out, out
    # Bad scans are refused with their reason, not retried.
    code, out = await run_karma(["entropy", "scan", "--since", "60d"], env)
    assert code == 2 and "--since" in out and "at most 744" in out, out
    code, out = await run_karma(["entropy", "scan", "--until", "1h"], env)
    assert code == 2 and "--until" in out and "needs --since" in out, out
    schedule = await karma.temporal.get_schedule_handle(names.ENTROPY_SCAN_SCHEDULE).describe()
    intervals = schedule.schedule.spec.intervals
    every = timedelta(seconds=karma.settings.entropy.schedule_interval_s)
    assert [i.every for i in intervals] == [every]
    report(
        f"backfill of 3 windows: {len(ours)} deviation(s) stored once and on Kafka "
        f"({len(messages)} message(s), byte-identical); schedule every {every}"
    )


async def test_an_observed_step_gets_its_prediction(karma: EmbeddedKarma) -> None:
    """After a step with a baseline is observed, `entropy.predicted` says what should come
    next, how likely, and when (p10..p90 of the gap), for a plain consumer."""
    entity = unique("pred")
    start = datetime(2025, 4, 1, tzinfo=UTC)
    observations = []
    for run in range(40):
        at = start + timedelta(minutes=10 * run)
        second = "c" if run % 4 == 0 else "b"
        for offset, step in ((0, "a"), (5 + run % 5, second)):
            observations.append(
                {
                    "ts": at + timedelta(seconds=offset),
                    "entity_id": entity,
                    "correlation_id": f"{entity}-{run}",
                    "attrs": {"step": step, "status": "ok", "duration_ms": 100},
                }
            )
    await asyncio.to_thread(insert, karma.ledger, observations)
    await asyncio.to_thread(
        Scanner(karma.ledger, EntropySettings(training_window_s=86400)).learn,
        start + timedelta(days=1),
    )
    topic = karma.settings.kafka.topics.predictions
    sent: list[str] = []
    async with asyncio.timeout(60):
        while True:
            run_id = unique("run")
            observed = {
                "event_id": run_id,
                "ts": datetime.now(UTC).isoformat(),
                "event_type": "process.step",
                "entity_id": entity,
                "correlation_id": run_id,
                "attrs": {"step": "a", "status": "ok"},
            }
            await produce(
                karma.settings.kafka,
                karma.settings.kafka.topics.observations,
                [json.dumps(observed).encode()],
                key=entity.encode(),
            )
            sent.append(run_id)
            await asyncio.sleep(2)
            found = [
                json.loads(m.value)
                for m in await read_topics(karma.settings.kafka, [topic])
                if m.key == entity.encode() and m.value is not None
            ]
            if found:
                break
    p = found[0]
    assert p["event_type"] == "entropy.predicted" and p["correlation_id"] in sent
    attrs = p["attrs"]
    assert attrs["step"] == "a" and attrs["expected_next"] == "b"
    assert attrs["probability"] == 0.75 and attrs["next_steps"] == {"b": 0.75, "c": 0.25}
    low, high = attrs["expected_after_ms"]
    assert 5000 <= low <= high <= 9000  # the next step came 5..9 s later
