"""`karma ledger [ACTION_ID ...]` and `karma ledger reconcile [--since T]`."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from karma.cli.render import ledger_line
from karma.errors import FieldError, LedgerUnavailableError, ValidationError
from karma.settings import Settings, get_settings
from karma.since import parse_since

EXIT_OK = 0
RECONCILE = "reconcile"


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


def _show(settings: Settings, action_ids: list[str], as_json: bool) -> int:
    from bridge.ledger import Ledger  # the ledger client is only needed here

    try:
        store = Ledger.open_existing(settings.clickhouse_dsn, settings.clickhouse.database)
    except LedgerUnavailableError as unavailable:
        # Held by a running `karma dev`: that process serves it through its API.
        if not action_ids or not api_answers(settings):
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


def api_answers(settings: Settings) -> bool:
    try:
        return httpx.get(f"{_api_url(settings)}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def api_get(settings: Settings, path: str, params: dict[str, str] | None = None) -> httpx.Response:
    """GET from the API of the process that holds the ledger, with the local key.

    Raises:
        httpx.HTTPError: it cannot be reached, or it refused the key.
    """
    from karma.api.keys import client_key

    key = client_key(settings)
    answer = httpx.get(
        f"{_api_url(settings)}{path}",
        params=params,
        headers={"Authorization": f"Bearer {key}"} if key else {},
        timeout=30,
    )
    if answer.status_code == 401 or (
        answer.status_code == 403 and "scope" in answer.text and "tenant" not in answer.text
    ):
        raise httpx.HTTPError(
            f"it refused {'the key' if key else 'a request without a key'} "
            f"({answer.status_code}): set KARMA_API__KEY to a key with the read scope"
        )
    return answer


def _rows_from_api(settings: Settings, action_id: str) -> list[dict[str, Any]]:
    answer = api_get(settings, f"/v1/ledger/actions/{quote(action_id, safe='')}")
    if answer.status_code == 404:
        return []
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
