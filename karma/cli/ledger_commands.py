"""`karma ledger [ACTION_ID ...]` and `karma ledger reconcile [--since T]`."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from karma.cli.render import ledger_line
from karma.errors import FieldError, LedgerUnavailableError, ValidationError
from karma.settings import Settings, get_settings

EXIT_OK = 0
RECONCILE = "reconcile"
_AGO = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


async def ledger(args: argparse.Namespace) -> int:
    if args.action_id[:1] == [RECONCILE]:
        if args.action_id[1:]:
            reason = "takes no action ids (use --since to narrow it)"
            raise ValidationError([FieldError(field=RECONCILE, reason=reason)])
        return await _reconcile(get_settings(), parse_since(args.since))
    if args.since:
        reason = f"only applies to `karma ledger {RECONCILE}`"
        raise ValidationError([FieldError(field="--since", reason=reason)])
    return await asyncio.to_thread(_show, get_settings(), args.action_id, args.json)


def parse_since(text: str | None, now: datetime | None = None) -> datetime | None:
    """`2026-11-25T10:00:00Z` (a timezone is required) or an age: `90s`, `30m`, `2h`, `7d`."""
    if text is None:
        return None
    ago = _AGO.match(text.strip())
    if ago:
        delta = timedelta(**{_UNITS[ago.group(2)]: int(ago.group(1))})
        return (now or datetime.now(UTC)) - delta
    try:
        since = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        since = None
    if since is None or since.tzinfo is None:
        reason = (
            f"expected a time with a timezone (2026-11-25T10:00:00Z) or an age (2h), got {text!r}"
        )
        raise ValidationError([FieldError(field="--since", reason=reason)])
    return since.astimezone(UTC)


def _show(settings: Settings, action_ids: list[str], as_json: bool) -> int:
    from bridge.ledger import Ledger  # the ledger client is only needed here

    try:
        store = Ledger.open_existing(settings.clickhouse_dsn, settings.clickhouse.database)
    except LedgerUnavailableError as unavailable:
        # Held by a running `karma dev`: that process serves it through its API.
        if not action_ids or not _api_answers(settings):
            raise
        try:
            rows = [row for a in action_ids for row in _rows_from_api(settings, a)]
        except httpx.HTTPError as exc:
            raise LedgerUnavailableError(
                f"{unavailable}; the API at {_api_url(settings)} could not read it either: {exc}"
            ) from exc
    else:
        try:
            rows = [e.as_json() for e in store.transitions(action_ids or None)]
        finally:
            store.close()
    if as_json:
        for row in rows:
            print(json.dumps(row, default=str))
        return EXIT_OK
    current = None
    for row in rows:
        if row["action_id"] != current:
            current = row["action_id"]
            print(f"{row['action_id']}  {row['action_type']}")
        ts = datetime.fromisoformat(row["ts"])
        print(ledger_line(row["seq"], ts, row["event_type"], row["attrs"]))
    return EXIT_OK


def _api_url(settings: Settings) -> str:
    return settings.api.url()


def _api_answers(settings: Settings) -> bool:
    try:
        return httpx.get(f"{_api_url(settings)}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _rows_from_api(settings: Settings, action_id: str) -> list[dict[str, Any]]:
    from karma.api.keys import client_key

    key = client_key(settings)
    answer = httpx.get(
        f"{_api_url(settings)}/v1/ledger/actions/{quote(action_id, safe='')}",
        headers={"Authorization": f"Bearer {key}"} if key else {},
        timeout=30,
    )
    if answer.status_code == 404:
        return []
    if answer.status_code in (401, 403):
        raise httpx.HTTPError(
            f"it refused {'the key' if key else 'a request without a key'} "
            f"({answer.status_code}): set KARMA_API__KEY to a key with the read scope"
        )
    answer.raise_for_status()
    rows: list[dict[str, Any]] = answer.json()
    return rows


async def _reconcile(settings: Settings, since: datetime | None) -> int:
    """Against a running deployment: a worker must answer the status queries, and the
    ledger must be reachable from here (a ClickHouse server; `karma dev` reconciles its
    embedded ledger itself at start)."""
    from bridge.emit import TransitionPublisher
    from bridge.ledger import Ledger
    from bridge.reconcile import reconcile
    from bridge.sink import ledger_lag_settled
    from karma.client import connect_temporal

    store = await asyncio.to_thread(
        Ledger.open_existing, settings.clickhouse_dsn, settings.clickhouse.database
    )
    try:
        temporal = await connect_temporal(settings)
        async with TransitionPublisher(settings.kafka) as publisher:
            report = await reconcile(
                temporal,
                store,
                publisher,
                since=since,
                caught_up=lambda: ledger_lag_settled(settings),
                progress=lambda message: print(message, flush=True),
            )
    finally:
        store.close()
    print(report.summary())
    return EXIT_OK
