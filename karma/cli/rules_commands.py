"""`karma rules validate|test|list|schema`: rules files checked before they act."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from karma.envelope import Envelope
from karma.errors import FieldError, ValidationError, field_errors
from karma.params import validate_params
from karma.registry import default_registry
from karma.rules import RuleSet, check_actions, load_rules, rules_schema
from karma.settings import get_settings

EXIT_BAD_INPUT = 2


def _load(file: str) -> RuleSet:
    """The rules, their actions known to the registry (and interactive where approval is
    required), or a ValidationError naming each field."""
    try:
        rules = load_rules(Path(file))
    except OSError as exc:
        raise ValidationError([FieldError(field=file, reason=str(exc))]) from exc
    check_actions(rules, default_registry())
    return rules


async def validate(args: argparse.Namespace) -> int:
    rules = _load(args.file)
    print(
        f"{args.file}: {len(rules.rules)} rule(s) valid: {', '.join(r.name for r in rules.rules)}"
    )
    return 0


async def test(args: argparse.Namespace) -> int:
    """Which rules match the event, and what each would request (nothing is requested)."""
    rules = _load(args.file)
    try:
        document = json.loads(await asyncio.to_thread(Path(args.event).read_text, encoding="utf-8"))
        event = Envelope.model_validate(document)
    except (OSError, ValueError) as exc:
        if isinstance(exc, PydanticValidationError):
            raise ValidationError(field_errors(exc)) from exc
        raise ValidationError([FieldError(field=args.event, reason=str(exc))]) from exc
    registry = default_registry()
    out: list[dict[str, Any]] = []
    for rule in rules.matching(event):
        item: dict[str, Any] = {"rule": rule.name, "action": rule.then.action, "mode": rule.mode}
        try:
            item["params"] = rule.params_for(event)
            validate_params(registry.meta(rule.then.action), item["params"])
            item["idempotency_key"] = rule.dedup_key(event)
            item["correlation_id"] = event.event_id
        except ValidationError as invalid:
            item["invalid"] = str(invalid)
        out.append(item)
    if args.json:
        print(json.dumps(out, default=str))
        return 0
    if not out:
        print("no rule matches this event")
    for item in out:
        what = item.get("invalid") or json.dumps(item["params"], default=str)
        print(f"{item['rule']} ({item['mode']}): {item['action']} {what}")
    return 0


async def list_rules(args: argparse.Namespace) -> int:
    path = get_settings().entropy.rules_file
    if path is None:
        print("no rules file (set KARMA_ENTROPY__RULES_FILE)")
        return 0
    rules = _load(str(path))
    for rule in rules.rules:
        when = rule.when.deviation or rule.when.observation
        matches = when.model_dump(exclude_defaults=True) if when else {}
        approval = " (approval)" if rule.require_approval else ""
        print(f"{rule.name}: {rule.mode}, when {matches} then {rule.then.action}{approval}")
    return 0


async def schema(args: argparse.Namespace) -> int:
    json.dump(rules_schema(), sys.stdout, indent=2)
    print()
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rules = sub.add_parser(
        "rules",
        help="rules that turn deviations and observations into guarded actions",
        description="A rules file (YAML) holds `rules:`; each has when (deviation: metric, "
        "entity glob, step glob, min_surprise_bits; or observation: event_type, entity, attrs), "
        "then (action, params as Jinja2 templates over `event`), guards (dedup_window_s, "
        "rate_limit, entity_rate_limit, cooldown_s, max_in_flight), require_approval and "
        "mode (live or dry-run).",
    )
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    check = rules_sub.add_parser("validate", help="check a rules file")
    check.add_argument("file")
    check.set_defaults(run=validate)
    trial = rules_sub.add_parser("test", help="which rules match an event, what they'd request")
    trial.add_argument("file")
    trial.add_argument("--event", required=True, help="a JSON envelope (deviation or observation)")
    trial.add_argument("--json", action="store_true")
    trial.set_defaults(run=test)
    listing = rules_sub.add_parser("list", help="the rules of KARMA_ENTROPY__RULES_FILE")
    listing.set_defaults(run=list_rules)
    schema_parser = rules_sub.add_parser("schema", help="the rules file's JSON Schema")
    schema_parser.set_defaults(run=schema)
