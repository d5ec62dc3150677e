"""`karma ledger [ACTION_ID ...]` and `karma ledger reconcile [--since T]`."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from datetime import UTC, datetime, timedelta

from karma.cli.render import ledger_line
from karma.errors import FieldError, ValidationError
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

    store = Ledger.open_existing(settings.clickhouse_dsn, settings.clickhouse.database)
    try:
        events = store.transitions(action_ids or None)
    finally:
        store.close()
    if as_json:
        for e in events:
            print(json.dumps({**e.__dict__, "ts": e.ts.isoformat()}, default=str))
        return EXIT_OK
    current = None
    for e in events:
        if e.action_id != current:
            current = e.action_id
            print(f"{e.action_id}  {e.action_type}")
        print(ledger_line(e.seq, e.ts, e.event_type, e.attrs))
    return EXIT_OK


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
