"""`karma callback | transitions | approve | reject | dlq list | dlq replay`: what reaches
a running action from outside, what it recorded, and dead letters."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from karma import untrusted_json
from karma.cli.action_commands import connect
from karma.cli.render import transition_line
from karma.errors import FieldError, ValidationError
from karma.settings import get_settings

EXIT_OK = 0
PREVIEW_CHARS = 120
PAST_TENSE = {"approve": "approved", "reject": "rejected"}


async def callback(args: argparse.Namespace) -> int:
    event = _read_event(args.event)
    client = await connect()
    delivered = await client.handle(args.action_id).callback(event)
    print(f"callback {delivered.event_id} ({delivered.event_type}) delivered to {args.action_id}")
    return EXIT_OK


async def decide(args: argparse.Namespace) -> int:
    client = await connect()
    decision = await client.handle(args.action_id).decide(
        args.verdict, by=args.by or getpass.getuser(), reason=args.reason or ""
    )
    print(f"{args.action_id}: {PAST_TENSE[decision.verdict.value]} by {decision.by}")
    return EXIT_OK


async def transitions(args: argparse.Namespace) -> int:
    client = await connect()
    handle = client.handle(args.action_id)
    if args.follow:
        async for event in handle.transitions():
            _print_event(event.model_dump(mode="json") if args.json else transition_line(event))
        return EXIT_OK
    for event in (await handle.status()).transitions:
        _print_event(event.model_dump(mode="json") if args.json else transition_line(event))
    return EXIT_OK


async def dlq_list(args: argparse.Namespace) -> int:
    from bridge.dlq import read_dead_letters

    settings = get_settings()
    letters = await read_dead_letters(settings.kafka)
    if args.topic:
        letters = [letter for letter in letters if letter.topic == args.topic]
    for letter in letters[-args.limit :] if args.limit else letters:
        if args.json:
            record = letter.model_dump(mode="json", exclude={"key", "value"})
            record.update(key=_text(letter.key), value=_text(letter.value))
            print(json.dumps(record), flush=True)
            continue
        print(
            f"{letter.position:<10} {letter.ts[:23]:<23}  {letter.stage:<16} "
            f"{letter.topic}@{letter.partition}:{letter.offset}"
        )
        print(f"    reason: {letter.reason}")
        print(f"    value:  {_preview(letter.value)}", flush=True)
    if not args.json:
        print(f"{len(letters)} dead letter(s) on {settings.kafka.topics.dlq}")
    return EXIT_OK


async def dlq_replay(args: argparse.Namespace) -> int:
    from bridge.dlq import replay

    settings = get_settings()
    for letter in await replay(settings.kafka, args.positions):
        print(f"replayed {letter.position} to {letter.topic} (first seen at {letter.origin})")
    return EXIT_OK


def _read_event(source: str) -> dict[str, Any]:
    try:
        if source == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(source, "rb") as file:
                raw = file.read()
    except OSError as exc:
        raise ValidationError([FieldError(field="--event", reason=str(exc))]) from exc
    try:
        return untrusted_json.loads_object(raw)
    except ValidationError as exc:
        errors = [FieldError(field="--event", reason=e.reason) for e in exc.errors]
        raise ValidationError(errors) from exc


def _print_event(line: str | dict[str, Any]) -> None:
    print(line if isinstance(line, str) else json.dumps(line), flush=True)


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "backslashreplace")


def _preview(raw: bytes | None) -> str:
    text = _text(raw)
    if text is None:
        return "(no value)"
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "…"
