"""`karma stats`: outcome rates, timings, retries, failing entities and the error
taxonomy, read from the ledger (or, when `karma dev` holds it, through its API)."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from rich.text import Text

from karma.cli.ledger_commands import api_answers, api_get
from karma.errors import FieldError, LedgerUnavailableError, ValidationError
from karma.settings import Settings, get_settings
from karma.since import parse_since

EXIT_OK = 0
TIMINGS = (
    ("time_to_accept_ms", "requested → accepted"),
    ("time_to_start_ms", "requested → started"),
    ("time_to_resolve_ms", "requested → ended"),
    ("trigger_to_request_ms", "trigger → requested"),
    ("trigger_to_resolve_ms", "trigger → ended"),
)
OUTCOME_COLUMNS = (
    ("SUCCEEDED", "succeeded", "green"),
    ("FAILED", "failed", "red"),
    ("TIMED_OUT", "timed out", "red"),
    ("CANCELLED", "cancelled", "yellow"),
    ("SKIPPED", "skipped", "cyan"),
    ("COMPENSATED", "compensated", "magenta"),
)


async def stats(args: argparse.Namespace) -> int:
    settings = get_settings()
    query = {
        "since": args.since,
        "until": args.until,
        "type": args.type,
        "tenant": args.tenant,
        "by": args.by,
    }
    for field in ("since", "until"):
        parse_since(query[field], field=f"--{field}")  # refuse a bad one before any reading
    answer = await asyncio.to_thread(read_stats, settings, query, args.top)
    if args.json:
        print(json.dumps(answer, default=str))
        return EXIT_OK
    render(answer, Console())
    return EXIT_OK


async def report(args: argparse.Namespace) -> int:
    from karma.report import render_html

    settings = get_settings()
    query = {"since": args.since, "until": args.until, "type": args.type, "tenant": args.tenant}
    for field in ("since", "until"):
        parse_since(query[field], field=f"--{field}")
    answer = await asyncio.to_thread(read_stats, settings, {**query, "by": "type"}, 10)
    page = render_html(answer)
    path = Path(args.html)
    await asyncio.to_thread(path.write_text, page, encoding="utf-8")
    ended = sum(g["total"] for g in answer["stats"]["groups"])
    print(f"wrote {path} ({len(page) // 1024} KiB, {ended} ended actions, no network needed)")
    return EXIT_OK


def read_stats(settings: Settings, query: dict[str, Any], top: int) -> dict[str, Any]:
    """{"stats": ..., "errors": [...]}: from the ledger, or from the API of the process
    that holds it."""
    from bridge.analytics import Analytics, Filters
    from bridge.ledger import Ledger

    try:
        store = Ledger.open_existing(settings.clickhouse_dsn, settings.clickhouse.database)
    except LedgerUnavailableError as unavailable:
        if not api_answers(settings):
            raise
        params = {k: str(v) for k, v in query.items() if v is not None}
        try:
            answers = [
                api_get(settings, "/v1/stats", {**params, "top": str(top)}),
                api_get(settings, "/v1/errors", {k: v for k, v in params.items() if k != "by"}),
            ]
            for answer in answers:
                _refused(answer)
                answer.raise_for_status()
        except httpx.HTTPError as exc:
            raise LedgerUnavailableError(
                f"{unavailable}; the API at {settings.api.url()} could not read it either: {exc}"
            ) from exc
        return {"stats": answers[0].json(), "errors": answers[1].json()}
    try:
        filters = Filters(
            since=parse_since(query["since"], field="--since"),
            until=parse_since(query["until"], field="--until"),
            action_type=query["type"] or "",
            tenant=query["tenant"] or "",
        )
        analytics = Analytics(store)
        analytics.check_ready()
        return {
            "stats": analytics.stats(filters, query["by"], top=top).as_json(),
            "errors": [g.as_json() for g in analytics.errors(filters)],
        }
    finally:
        store.close()


def _refused(answer: httpx.Response) -> None:
    """Raise what the API said about a request it refused (bad filters, another tenant).

    Raises:
        karma.errors.ValidationError: a 422 (its fields) or a 403 (its reason).
    """
    if answer.status_code not in (403, 422):
        return
    try:
        problem = answer.json()
    except ValueError:
        problem = {}
    errors = [
        FieldError(field=str(e.get("field", "")), reason=str(e.get("reason", "")))
        for e in problem.get("errors", [])
    ] or [FieldError(field="--tenant", reason=str(problem.get("detail", answer.text[:200])))]
    raise ValidationError(errors)


def top_count(text: str) -> int:
    """`--top`: a whole number from 1 to 1000."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 1000, got {text!r}")
    return value


def duration(ms: float | None) -> str:
    """A duration people read at a glance: 850 ms, 1.25 s, 3.4 min, 2.1 h."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.2f} s"
    if ms < 3_600_000:
        return f"{ms / 60_000:.1f} min"
    return f"{ms / 3_600_000:.1f} h"


def render(answer: dict[str, Any], console: Console) -> None:
    stats, errors = answer["stats"], answer["errors"]
    groups = stats["groups"]
    by = stats["by"]
    if not groups:
        console.print("No ended actions in the ledger for these filters.")
        return
    heading = by or "all"
    outcomes = Table(title="Outcomes of ended actions", title_justify="left")
    outcomes.add_column(heading)
    outcomes.add_column("total", justify="right")
    for _, label, colour in OUTCOME_COLUMNS:
        outcomes.add_column(label, justify="right", style=colour)
    outcomes.add_column("success", justify="right")
    for g in groups:
        outcomes.add_row(
            Text(g["group"] or "(all)"),
            str(g["total"]),
            *(str(g["outcomes"].get(key, 0)) for key, _, _ in OUTCOME_COLUMNS),
            f"{100 * g['rates']['SUCCEEDED']:.1f} %",
        )
    console.print(outcomes)

    timings = Table(title="Timings (exact percentiles)", title_justify="left")
    for name in (heading, "from → to", "actions", "mean", "p50", "p90", "p99"):
        timings.add_column(name, justify="left" if name in (heading, "from → to") else "right")
    for g in groups:
        for key, label in TIMINGS:
            t = g[key]
            if not t["count"]:
                continue
            timings.add_row(
                Text(g["group"] or "(all)"),
                label,
                str(t["count"]),
                *(duration(t[q]) for q in ("mean", "p50", "p90", "p99")),
            )
    console.print(timings)

    retries = stats["retries_per_action"]
    spread = ", ".join(f"{n} retr{'y' if n == '1' else 'ies'}: {c}" for n, c in retries.items())
    console.print(f"Actions by retries: {spread}")

    if stats["top_failing_entities"]:
        failing = Table(title="Entities failing most", title_justify="left")
        for name in ("entity", "failed", "of"):
            failing.add_column(name, justify="left" if name == "entity" else "right")
        for e in stats["top_failing_entities"]:
            failing.add_row(Text(e["entity_id"]), str(e["failed"]), str(e["total"]))
        console.print(failing)

    if errors:
        taxonomy = Table(title="Error groups (type x fingerprint)", title_justify="left")
        for name in ("count", "type", "fingerprint", "last seen", "example"):
            taxonomy.add_column(name, justify="right" if name == "count" else "left")
        for e in errors:
            taxonomy.add_row(
                str(e["count"]),
                Text(e["error_type"]),
                Text(e["fingerprint"]),
                (e["last_seen"] or "")[:19].replace("T", " "),
                Text(e["example_action_ids"][0] if e["example_action_ids"] else ""),
            )
        console.print(taxonomy)
    else:
        console.print("No errors.")
