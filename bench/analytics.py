"""`python -m bench.analytics` (run by `make bench`): the ledger's analytics on a million
actions. Fills a fresh embedded ClickHouse through the sink's insert path (`ledger_row`
and `Ledger.write`: the dedup query, the insert, the views that fold each block into
`action_outcomes`), then times every `karma stats` query and the whole HTML report.

Goals: each stats query under 1 s, the report under 5 s, on this machine. Writes
bench/analytics.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bridge.analytics import Analytics, Filters
from bridge.ledger import Ledger
from bridge.ledger_schema import KafkaPosition, ledger_row
from karma.envelope import EventSource, Transition
from karma.lifecycle import EventType
from karma.report import render_html

E = EventType
RESULTS = Path(__file__).parent / "analytics.md"
TYPES = [f"ops.{name}" for name in ("restart", "deploy", "notify", "scale", "rotate")] + [
    f"team{i}.job" for i in range(15)
]
TENANTS = ["acme", "globex", "initech", "umbrella", "hooli"]


def _timeout(r: random.Random) -> str:
    return f"timeout after {r.randint(100, 90_000)} ms calling 'svc-{r.randint(1, 40)}'"


def _http(r: random.Random) -> str:
    item, page = r.randint(1, 10**6), r.randint(1, 9)
    code = r.choice([502, 503, 504])
    return f"HTTP {code} from https://api.example.com/v1/items/{item}?page={page}"


def _missing(r: random.Random) -> str:
    return f"job job-{r.randint(1000, 10**6)} not found"


def _quota(r: random.Random) -> str:
    return f"quota exceeded for tenant '{r.choice(TENANTS)}': {r.randint(1, 99)}/100"


def _no_callback(r: random.Random) -> str:
    return f"no callback for act_{r.getrandbits(64):016x} within {r.randint(1, 60)}s"


ERRORS: list[tuple[str, Callable[[random.Random], str]]] = [
    ("transient", _timeout),
    ("transient", _http),
    ("permanent", _missing),
    ("permanent", _quota),
    ("timed_out", _no_callback),
]
GOAL_QUERY_S, GOAL_REPORT_S = 1.0, 5.0


def actions(count: int, seed: int = 7) -> Iterator[Transition]:
    """About six transitions per action over 30 days: most succeed; some retry, fail, time
    out, are cancelled or skipped; a few compensate."""
    r = random.Random(seed)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=30)
    source = EventSource()
    for i in range(count):
        action_id = f"act_an{i:010d}"
        action_type = TYPES[min(int(r.expovariate(0.25)), len(TYPES) - 1)]
        tags = {"action": action_type, "tenant": TENANTS[i % len(TENANTS)]}
        at = start + timedelta(seconds=r.uniform(0, 30 * 86400))
        resolve_ms = int(r.lognormvariate(7.5, 1.3))
        steps: list[tuple[EventType, dict[str, Any], int]] = [
            (E.REQUESTED, {"command": action_type}, 0),
            (E.ACCEPTED, {}, r.randint(5, 80)),
            (E.STARTED, {"attempt": 1}, r.randint(90, 200)),
            (E.PROGRESS, {"percent": 50.0}, resolve_ms // 2 + 201),
        ]
        retries = min(int(r.expovariate(2.0)), 5)
        for n in range(retries):
            steps.append((E.RETRYING, {"attempt": n + 1}, resolve_ms // 2 + 202 + n))
        roll = r.random()
        if roll < 0.85:
            end: tuple[EventType, dict[str, Any]] = (E.SUCCEEDED, {})
        elif roll < 0.95:
            kind, message = ERRORS[r.randrange(len(ERRORS))]
            event = E.TIMED_OUT if kind == "timed_out" else E.FAILED
            end = (event, {"error": {"type": kind, "message": message(r)}})
        elif roll < 0.97:
            steps.append((E.COMPENSATING, {}, resolve_ms - 2))
            steps.append((E.COMPENSATED, {}, resolve_ms - 1))
            end = (E.FAILED, {"error": {"type": "permanent", "message": "step activate failed"}})
        elif roll < 0.99:
            end = (E.CANCELLED, {"error": {"type": "cancelled", "message": "cancelled on request"}})
        else:
            end = (E.SKIPPED, {"reason": "already done"})
        steps.append((end[0], {**end[1], "duration_ms": resolve_ms}, resolve_ms + 300))
        entity = f"svc-{r.randint(1, 2000)}"
        for seq, (event_type, attrs, ms) in enumerate(steps, start=1):
            yield Transition(
                ts=at + timedelta(milliseconds=ms), event_type=event_type, action_id=action_id,
                seq=seq, entity_id=entity, correlation_id=f"run-{i // 3}", source=source,
                tags=tags, attrs=attrs,
            )  # fmt: skip


def fill(ledger: Ledger, count: int, batch: int) -> tuple[int, float]:
    """Write `count` actions' transitions in batches of `batch` rows; (rows, seconds)."""
    position = KafkaPosition("actions.progress", 0, 0)
    rows: list[list[Any]] = []
    written = 0
    began = time.perf_counter()
    for n, event in enumerate(actions(count)):
        rows.append(ledger_row(event, KafkaPosition(position.topic, 0, n)))
        if len(rows) >= batch:
            written += ledger.write(rows)
            rows = []
    if rows:
        written += ledger.write(rows)
    return written, time.perf_counter() - began


def timed(run: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median and worst seconds over `repeat` runs (after one to warm up)."""
    run()
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.analytics", description=__doc__)
    parser.add_argument("--actions", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=20_000, help="rows per insert")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each query")
    parser.add_argument("--no-write", action="store_true", help="do not update analytics.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="karma-bench-analytics-") as tmp:
        ledger = Ledger.open(f"chdb://{tmp}/ledger")
        ledger.migrate()
        print(f"filling {args.actions:,} actions…", flush=True)
        rows, fill_s = fill(ledger, args.actions, args.batch)
        print(f"  {rows:,} transitions in {fill_s:.1f} s ({rows / fill_s:,.0f}/s)", flush=True)
        analytics = Analytics(ledger)
        everything = Filters()
        month = Filters(since=datetime.now(UTC) - timedelta(days=7))
        deploys = Filters(action_type="ops.deploy")
        queries: list[tuple[str, Callable[[], object]]] = [
            ("karma stats", lambda: analytics.stats(everything)),
            ("karma stats --by type", lambda: analytics.stats(everything, "type")),
            ("karma stats --by tenant", lambda: analytics.stats(everything, "tenant")),
            ("karma stats --by day", lambda: analytics.stats(everything, "day")),
            ("karma stats --since 7d --by type", lambda: analytics.stats(month, "type")),
            ("karma stats --type ops.deploy", lambda: analytics.stats(deploys)),
            ("error groups (karma stats, /v1/errors)", lambda: analytics.errors(everything)),
            ("/v1/correlations/{id}", lambda: analytics.correlation("run-4242")),
        ]  # fmt: skip

        def report() -> str:
            return render_html(
                {
                    "stats": analytics.stats(everything, "type").as_json(),
                    "errors": [g.as_json() for g in analytics.errors(everything)],
                }
            )

        results = []
        for name, run in queries:
            median, worst = timed(run, args.repeat)
            results.append((name, median, worst, GOAL_QUERY_S))
            print(f"  {name}: {median * 1000:.0f} ms (worst {worst * 1000:.0f})", flush=True)
        median, worst = timed(report, max(1, args.repeat // 2))
        results.append(("karma report --html (queries and page)", median, worst, GOAL_REPORT_S))
        print(f"  report: {median:.2f} s (worst {worst:.2f})", flush=True)
        [(ended,)] = ledger.rows(f"SELECT count() FROM {ledger.database}.ended_actions")
        ledger.close()
    lines = [
        f"# Analytics on {args.actions:,} actions",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python -m bench.analytics` "
        f"(`make bench`) on {os.cpu_count()} cores, Python {platform.python_version()}: "
        f"embedded ClickHouse (chdb), {args.actions:,} actions ({ended:,} ended), {rows:,} "
        f"transitions written through the sink's insert path in batches of {args.batch:,} rows "
        f"in {fill_s:.0f} s ({rows / fill_s:,.0f} transitions/s, the views included).",
        "",
        "| query | median | worst | goal | |",
        "|---|---|---|---|---|",
    ]
    for name, median, worst, goal in results:
        verdict = "met" if median < goal else f"**missed** by {median - goal:.2f} s"
        lines.append(f"| {name} | {median:.3f} s | {worst:.3f} s | < {goal:g} s | {verdict} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
