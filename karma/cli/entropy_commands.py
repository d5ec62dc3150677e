"""`karma entropy scan|deviations|baselines` and `karma simulate`.

A scan runs as EntropyScanWorkflow on the entropy task queue (served by the process that
reads the ledger), so it works the same while `karma dev` holds the embedded ledger. The
readings come from the ledger, or from the API of the process that holds it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from rich.text import Text
from temporalio.client import WorkflowFailureError

from karma.cli.ledger_commands import api_answers, api_get
from karma.cli.stats_commands import duration
from karma.errors import FieldError, LedgerUnavailableError, ValidationError
from karma.settings import Settings, get_settings
from karma.since import parse_since


def _value(metric: str, value: float) -> str:
    if metric in ("sequence_change", "latency_spread"):
        return f"{value:.3f} bits"
    return duration(value)


async def scan(args: argparse.Namespace) -> int:
    from karma.client import connect_temporal
    from karma.workflow_io import EntropyScanInput, EntropyScanOutput

    settings = get_settings()
    since = parse_since(args.since, field="--since")
    until = parse_since(args.until, field="--until")
    if until is not None and since is None:
        raise ValidationError([FieldError(field="--until", reason="needs --since (a backfill)")])
    if since is not None:
        end = until or datetime.now(UTC)
        if end <= since:
            raise ValidationError([FieldError(field="--until", reason="must be after --since")])
        windows = (end - since) / timedelta(seconds=settings.entropy.scan_window_s)
        limit = settings.entropy.max_backfill_windows
        if windows > limit + 1:
            reason = (
                f"covers about {windows:.0f} scan windows; at most {limit} in one scan "
                "(KARMA_ENTROPY__MAX_BACKFILL_WINDOWS)"
            )
            raise ValidationError([FieldError(field="--since", reason=reason)])
    client = await connect_temporal(settings)
    handle = await client.start_workflow(
        "EntropyScanWorkflow",
        EntropyScanInput(dry_run=args.dry_run, since=since, until=until),
        id=f"karma-entropy-scan-{uuid.uuid4().hex[:12]}",
        task_queue=settings.entropy.task_queue,
        result_type=EntropyScanOutput,
    )
    waiting = asyncio.ensure_future(handle.result())
    began = asyncio.get_running_loop().time()
    while not waiting.done():
        done, _ = await asyncio.wait([waiting], timeout=5)
        if not done and not args.json:
            elapsed = asyncio.get_running_loop().time() - began
            hint = (
                f"; nothing takes it? a process reading the ledger serves the task queue "
                f"{settings.entropy.task_queue!r} (karma dev, karma service)"
                if elapsed > 30
                else ""
            )
            print(f"scanning… {elapsed:.0f} s (workflow {handle.id}){hint}", flush=True)
    try:
        out: EntropyScanOutput = waiting.result()
    except WorkflowFailureError as failed:
        cause: BaseException | None = failed.cause
        while cause is not None and cause.__cause__ is not None:  # the activity's own error
            cause = cause.__cause__
        message = getattr(cause, "message", None) or str(cause)
        print(f"karma: the scan failed: {message}", file=sys.stderr)
        return 1
    if args.json:
        print(out.model_dump_json())
        return 0
    mode = "dry run: nothing stored or published; " if args.dry_run else ""
    print(
        f"{mode}{len(out.windows)} window(s), {out.observations} observation(s), "
        f"{out.baselines_learned} baseline(s) learned, {out.deviations} deviation(s)"
        + ("" if args.dry_run else f", {out.published} published")
    )
    render_deviations(out.top, Console())
    return 0


def _read(settings: Settings, path: str, params: dict[str, str], local: Any) -> Any:
    """From the ledger (`local(scanner)`), or from the API of the process holding it."""
    from bridge.entropy import Scanner
    from bridge.ledger import Ledger

    try:
        store = Ledger.open_existing(settings.clickhouse_dsn, settings.clickhouse.database)
    except LedgerUnavailableError as unavailable:
        if not api_answers(settings):
            raise
        try:
            answer = api_get(settings, path, params)
            answer.raise_for_status()
        except httpx.HTTPError as exc:
            raise LedgerUnavailableError(
                f"{unavailable}; the API at {settings.api.url()} could not read it either: {exc}"
            ) from exc
        return answer.json()
    try:
        scanner = Scanner(store, settings.entropy)
        scanner.check_ready()
        return local(scanner)
    finally:
        store.close()


async def deviations(args: argparse.Namespace) -> int:
    settings = get_settings()
    since = parse_since(args.since, field="--since")
    params = {"limit": str(args.limit)}
    if args.since:
        params["since"] = args.since
    if args.entity:
        params["entity"] = args.entity
    rows = await asyncio.to_thread(
        _read,
        settings,
        "/v1/entropy/deviations",
        params,
        lambda s: s.deviations(since, limit=args.limit, entity_id=args.entity or ""),
    )
    if args.json:
        print(json.dumps(rows, default=str))
        return 0
    render_deviations(rows, Console())
    return 0


async def baselines(args: argparse.Namespace) -> int:
    settings = get_settings()
    params = {"entity": args.entity} if args.entity else {}
    rows = await asyncio.to_thread(
        _read,
        settings,
        "/v1/entropy/baselines",
        {**params, "limit": "10000"},
        lambda s: [b.as_json() for b in s.baselines(datetime.now(UTC), args.entity or "")],
    )
    if args.json:
        print(json.dumps(rows, default=str))
        return 0
    if not rows:
        print("No baselines yet: a scan learns them from the observations.")
        return 0
    table = Table(title="Baselines (latest per entity and step)", title_justify="left")
    for name in ("entity", "step", "samples", "median", "MAD", "p90", "p99", "H latency", "H next"):
        table.add_column(name, justify="left" if name in ("entity", "step") else "right")
    for b in rows:
        table.add_row(
            Text(b["entity_id"]),
            Text(b["step"]),
            str(b["samples"]),
            duration(b["median_ms"]),
            duration(b["mad_ms"]),
            duration(b["p90_ms"]) if b["step"] != "$start" else "-",
            duration(b["p99_ms"]) if b["step"] != "$start" else "-",
            f"{b['latency_entropy_bits']:.2f} bits",
            f"{b['next_entropy_bits']:.2f} bits",
        )
    Console().print(table)
    return 0


def render_deviations(rows: list[dict[str, Any]], console: Console) -> None:
    if not rows:
        console.print("No deviations.")
        return
    table = Table(title="Deviations, most surprising first", title_justify="left")
    for name in ("surprise", "entity", "step", "metric", "baseline", "observed", "n", "window"):
        right = name in ("surprise", "n")
        table.add_column(name, justify="right" if right else "left", overflow="fold")
    for d in rows:
        table.add_row(
            f"{d['surprise_bits']:.1f} bits",
            Text(d["entity_id"]),
            Text(d["step"]),
            d["metric"],
            _value(d["metric"], d["baseline_value"]),
            _value(d["metric"], d["observed_value"]),
            str(d["samples"]),
            f"{str(d['window_start'])[:16]} +{_window_length(d)}",
        )
    console.print(table)


def _window_length(d: dict[str, Any]) -> str:
    start, end = (datetime.fromisoformat(str(d[k])) for k in ("window_start", "window_end"))
    return duration((end - start).total_seconds() * 1000)


async def simulate(args: argparse.Namespace) -> int:
    from karma.entropy import simulate as sim

    settings = get_settings()
    start = datetime.now(UTC) - timedelta(days=args.days)
    scenario = sim.Scenario(
        entities=args.entities,
        days=args.days,
        period_s=args.period,
        anomalies=args.anomalies,
        anomaly_after_days=args.days * 0.6,
        anomaly_hours=args.anomaly_hours,
        seed=args.seed,
        prefix=args.prefix,
        start=start.replace(microsecond=0),
    )
    observations, truth = await asyncio.to_thread(sim.observations, scenario)
    truth_text = json.dumps([a.as_json() for a in truth], indent=2) + "\n"
    await asyncio.to_thread(Path(args.truth).write_text, truth_text, encoding="utf-8")
    if args.jsonl:
        lines = "".join(
            json.dumps(sim.envelope(o), separators=(",", ":")) + "\n" for o in observations
        )
        await asyncio.to_thread(Path(args.jsonl).write_text, lines, encoding="utf-8")
        where = args.jsonl
    else:
        where = await _publish(settings, [sim.envelope(o) for o in observations])
    print(
        f"{len(observations)} observations of {args.entities} entities over {args.days:g} "
        f"days to {where}; {len(truth)} anomalies injected (the truth: {args.truth})"
    )
    return 0


async def _publish(settings: Settings, documents: list[dict[str, Any]]) -> str:
    from bridge.producer import LazyProducer

    topic = settings.kafka.topics.observations
    producer = LazyProducer(settings.kafka)
    try:
        kafka = await producer.get()
        for n, document in enumerate(documents, start=1):
            await kafka.send(
                topic,
                key=document["entity_id"].encode(),
                value=json.dumps(document, separators=(",", ":")).encode(),
            )
            if n % 20_000 == 0:
                await kafka.flush()
                print(f"published {n} of {len(documents)}…", flush=True)
        await kafka.flush()
    finally:
        await producer.stop()
    return topic


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value

    return parse


def _count(text: str) -> int:
    """A whole number from 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0, got {text!r}")
    return value


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    entropy = sub.add_parser(
        "entropy",
        help="baselines learned from observations, and the deviations from them",
        description="Expectations per (entity, step) are learned from the observations "
        "(latency median/MAD/quantiles, a histogram, the next steps, entropies in bits); "
        "each scan window is compared with them and significant deviations are ranked by "
        "surprise (-log2 p, in bits).",
    )
    entropy_sub = entropy.add_subparsers(dest="entropy_command", required=True)
    scan_parser = entropy_sub.add_parser(
        "scan", help="scan the windows since the last scan (a Temporal workflow)"
    )
    scan_parser.add_argument(
        "--dry-run", action="store_true", help="find deviations; store and publish nothing"
    )
    scan_parser.add_argument(
        "--since", help="scan again the windows from here (ISO 8601 or an age: 2d): a backfill"
    )
    scan_parser.add_argument("--until", help="with --since: the end (default: now)")
    scan_parser.add_argument("--json", action="store_true")
    scan_parser.set_defaults(run=scan)
    devs = entropy_sub.add_parser("deviations", help="deviations found, most surprising first")
    devs.add_argument("--since", help="ISO 8601 or an age back from now (24h, 7d)")
    devs.add_argument("--entity", help="one entity's only")
    devs.add_argument("--limit", type=_positive(int), default=50)
    devs.add_argument("--json", action="store_true")
    devs.set_defaults(run=deviations)
    base = entropy_sub.add_parser("baselines", help="what normal looks like, per entity and step")
    base.add_argument("--entity", help="one entity's only")
    base.add_argument("--json", action="store_true")
    base.set_defaults(run=baselines)

    simulate_parser = sub.add_parser(
        "simulate",
        help="generate observations with known anomalies (and write the truth)",
        description="Entities run five-step processes (periodic or not, skewed latencies, "
        "some branching); anomalies of every kind (latency drift, variance blow-up, a "
        "skipped step, reordered steps, a stuck run, a missed periodic start) are injected "
        "in the last 40% of the period, which ends now. Published to events.normalized.",
    )
    simulate_parser.add_argument("--entities", type=_positive(int), default=20)
    simulate_parser.add_argument("--days", type=_positive(float), default=3.0)
    simulate_parser.add_argument(
        "--period", type=_positive(float), default=300.0, help="seconds between runs"
    )
    simulate_parser.add_argument("--anomalies", type=_count, default=6)
    simulate_parser.add_argument("--anomaly-hours", type=_positive(float), default=4.0)
    simulate_parser.add_argument("--seed", type=int, default=7)
    simulate_parser.add_argument("--prefix", default="entity", help="entity ids: PREFIX-0000")
    simulate_parser.add_argument(
        "--truth", default="simulation-truth.json", help="where the anomalies are written"
    )
    simulate_parser.add_argument("--jsonl", help="write JSON lines here instead of publishing")
    simulate_parser.set_defaults(run=simulate)
