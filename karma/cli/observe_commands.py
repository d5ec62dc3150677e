"""`karma observe [FILE]`: publish observations (JSON lines) to `events.normalized`, for
tests, demos and backfills. Every line is checked first; one that cannot be used stops the
whole file, naming its line, before anything is published."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import IO, Any

from karma.errors import ValidationError
from karma.observations import decode_observation, event_id_for
from karma.settings import LimitsSettings, get_settings

EXIT_BAD_INPUT = 2


def _documents(stream: IO[str], limits: LimitsSettings) -> tuple[list[dict[str, Any]], list[str]]:
    """The observations of the lines (a missing `ts` is now; a missing `event_id` comes
    from the line as written, so sending the file again stores nothing twice)."""
    now = datetime.now(UTC).isoformat()
    documents: list[dict[str, Any]] = []
    problems: list[str] = []
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            document = json.loads(line)
        except (ValueError, RecursionError) as exc:
            problems.append(f"line {number}: not JSON ({exc})")
            continue
        if not isinstance(document, dict):
            problems.append(f"line {number}: not a JSON object")
            continue
        document.setdefault("event_id", event_id_for(dict(document)))
        document.setdefault("ts", now)
        try:  # as the bridge will read it (its limits: size, depth, no NaN)
            decode_observation(json.dumps(document).encode(), limits)
        except ValidationError as exc:
            problems.append(f"line {number}: {exc}")
            continue
        documents.append(document)
    return documents, problems


def _read(file: str, limits: LimitsSettings) -> tuple[list[dict[str, Any]], list[str]]:
    if file == "-":
        return _documents(sys.stdin, limits)
    with open(file, encoding="utf-8") as stream:
        return _documents(stream, limits)


async def observe(args: argparse.Namespace) -> int:
    from bridge.producer import LazyProducer

    settings = get_settings()
    try:
        documents, problems = await asyncio.to_thread(_read, args.file, settings.limits)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"karma: cannot read {args.file}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if problems:
        for problem in problems[:50]:
            print(f"karma: {problem}", file=sys.stderr)
        more = len(problems) - 50
        if more > 0:
            print(f"karma: … and {more} more", file=sys.stderr)
        print("karma: nothing was published", file=sys.stderr)
        return EXIT_BAD_INPUT
    topic = settings.kafka.topics.observations
    producer = LazyProducer(settings.kafka)
    try:
        kafka = await producer.get()
        for document in documents:
            key = document.get("entity_id") or document.get("correlation_id") or None
            await kafka.send(
                topic,
                key=key.encode() if isinstance(key, str) else None,
                value=json.dumps(document, separators=(",", ":")).encode(),
            )
        await kafka.flush()
    finally:
        await producer.stop()
    print(f"published {len(documents)} observation(s) to {topic}", flush=True)
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    observe_parser = sub.add_parser(
        "observe",
        help="publish observations (JSON lines) to events.normalized",
        description="Each line is an envelope: ts (default: now), event_type, entity_id, "
        "correlation_id (one run of a process), source, tags and attrs (attrs.step, "
        "attrs.duration_ms, attrs.status by convention). A line without event_id gets one "
        "derived from its content, so publishing the same file twice stores it once. The "
        "bridge writes them to the `observations` table.",
    )
    observe_parser.add_argument("file", nargs="?", default="-", help="a file, or - for stdin")
    observe_parser.set_defaults(run=observe)
