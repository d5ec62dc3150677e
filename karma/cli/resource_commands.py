"""`karma resources`: the supplied resources and circuit breakers of the worker that
`karma dev` runs, through its API."""

from __future__ import annotations

import argparse
import asyncio
import json

import httpx
from rich.console import Console
from rich.table import Table

from karma.errors import LedgerUnavailableError
from karma.settings import get_settings

STYLE = {"healthy": "green", "closed": "green", "unhealthy": "red", "open": "red"}


async def resources(args: argparse.Namespace) -> int:
    from karma.cli.ledger_commands import api_get

    settings = get_settings()
    try:
        answer = await asyncio.to_thread(api_get, settings, "/v1/resources")
        answer.raise_for_status()
    except httpx.HTTPError as exc:
        raise LedgerUnavailableError(
            f"the API at {settings.api.url()} (a running `karma dev`) could not answer: {exc}"
        ) from exc
    body = answer.json()
    if args.json:
        print(json.dumps(body))
        return 0
    console = Console()
    if not body.get("worker", True):
        console.print(f"the process serving {settings.api.url()} runs no worker")
    table = Table(title="resources")
    for column in ("name", "health", "last check", "created", "pool", "last error"):
        table.add_column(column)
    for r in body["resources"]:
        table.add_row(
            r["name"], f"[{STYLE.get(r['health'], 'yellow')}]{r['health']}[/]",
            str(r["last_check"] or "")[:19], str(r["created"]), str(r["pool_size"]),
            r["last_error"][:80],
        )  # fmt: skip
    console.print(table)
    breakers = Table(title="circuit breakers")
    for column in ("target", "state", "open for", "recent calls", "failures", "last error"):
        breakers.add_column(column)
    for b in body["breakers"]:
        breakers.add_row(
            b["target"], f"[{STYLE.get(b['state'], 'yellow')}]{b['state']}[/]",
            f"{b['open_for_s']:.1f} s" if b["open_for_s"] else "", str(b["recent_calls"]),
            str(b["recent_failures"]), b["last_error"][:80],
        )  # fmt: skip
    console.print(breakers if body["breakers"] else "no circuit breaker has been used yet")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "resources", help="the worker's supplied resources and circuit breakers (karma dev)"
    )
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=resources)
