"""`karma request | status | cancel | actions | ledger`."""

from __future__ import annotations

import argparse
import json

from karma.cli.params import parse_params
from karma.cli.render import (
    action_text,
    catalogue,
    error_text,
    status_text,
    transition_line,
)
from karma.client import KarmaClient
from karma.errors import FieldError, ValidationError
from karma.lifecycle import ActionState
from karma.params import params_json_schema, validate_params
from karma.registry import default_registry
from karma.request import ActionRequest
from karma.settings import get_settings

EXIT_OK = 0
EXIT_ACTION_FAILED = 1


async def request(args: argparse.Namespace) -> int:
    registry = default_registry()
    meta = registry.meta(args.type)  # unknown type: a ValidationError naming the choices
    # Checked before connecting: bad input never waits for Temporal.
    params = validate_params(meta, parse_params(meta, args.param, args.params_json))
    fields = {
        "idempotency_key": args.idempotency_key or "",
        "entity_id": args.entity_id,
        "correlation_id": args.correlation_id,
        "tenant": args.tenant,
        "priority": args.priority,
        "tags": _tags(args.tag),
    }
    ActionRequest.new(args.type, params, **fields)  # ids and names checked too
    client = await connect()
    handle = await client.request(args.type, params, **fields)
    verb = "requested" if handle.created else "already requested (same idempotency key)"
    print(f"action {handle.action_id} {verb}; workflow id {handle.workflow_id}")
    if not args.wait:
        return EXIT_OK
    async for event in handle.transitions():
        print(transition_line(event), flush=True)
    outcome = await handle.result()
    print(f"{outcome.state} after {outcome.attempts} attempt(s)")
    if outcome.error is not None:
        print(f"error: {error_text(outcome.error)}")
    if outcome.reason:
        print(f"skipped: {outcome.reason}")
    done = outcome.state in (ActionState.SUCCEEDED, ActionState.SKIPPED)
    return EXIT_OK if done else EXIT_ACTION_FAILED


async def status(args: argparse.Namespace) -> int:
    client = await connect()
    current = await client.handle(args.action_id).status()
    print(current.model_dump_json(indent=2) if args.json else status_text(current))
    return EXIT_OK


async def cancel(args: argparse.Namespace) -> int:
    client = await connect()
    await client.handle(args.action_id).cancel()
    print(f"cancellation requested for {args.action_id}")
    return EXIT_OK


async def actions(args: argparse.Namespace) -> int:
    registry = default_registry()
    if args.type is None:
        print(catalogue([a.meta for a in registry]))
        return EXIT_OK
    meta = registry.meta(args.type)
    print(
        json.dumps(params_json_schema(meta), indent=2)
        if args.schema
        else "\n".join(action_text(meta))
    )
    return EXIT_OK


async def connect() -> KarmaClient:
    """A client that also reads the ledger when it is a ClickHouse server (an embedded one
    belongs to the process running it: there the worker answers from the ledger)."""
    from bridge.ledger import PastActions

    settings = get_settings()
    past = PastActions.reachable(
        settings.clickhouse_dsn, settings.clickhouse.database, owns_embedded=False
    )
    return await KarmaClient.connect(settings, past=past)


def _tags(pairs: list[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    errors = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            errors.append(FieldError(field=f"--tag {pair!r}", reason="expected KEY=VALUE"))
        tags[key] = value
    if errors:
        raise ValidationError(errors)
    return tags
