"""`karma`: run the embedded stack, workers and the bridge; request and follow actions."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from pydantic import ValidationError as SettingsError
from temporalio.service import RPCError

from karma.cli import (
    action_commands,
    credential_commands,
    entropy_commands,
    graph_commands,
    inbound_commands,
    key_commands,
    ledger_commands,
    observe_commands,
    pipeline_commands,
    resource_commands,
    rules_commands,
    service_commands,
    stats_commands,
)
from karma.errors import KarmaError
from karma.logs import configure_logging
from karma.settings import get_settings

EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]

DESCRIPTION = """\
Karma runs operational actions as durable Temporal workflows and mirrors every state
transition to Kafka and a ClickHouse ledger.

Configuration comes from KARMA_* environment variables (nested with __), for example
KARMA_TEMPORAL__ADDRESS=127.0.0.1:7233, KARMA_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092,
KARMA_CLICKHOUSE__DSN=clickhouse://user:pass@host:8123 (default: embedded chdb under
KARMA_DATA_DIR, which is .karma).
"""

EPILOG = """\
examples:
  karma dev                                   # embedded stack until Ctrl-C
  karma actions                               # what can be requested
  karma request delay --param seconds=5 --wait
  karma request http_request --param url=https://example.com --idempotency-key ping-1
  karma status act_…   |   karma transitions act_… --follow   |   karma cancel act_…
  karma request demo.job --param steps=3 --wait     # completes through Kafka callbacks
  echo '{"event_type": "job.completed"}' | karma callback act_… --event -
  karma dlq list   |   karma dlq replay 0:12
  karma ledger act_…   |   karma ledger reconcile --since 2h
  karma stats --by type --since 24h   |   karma stats --json
  karma report --html report.html --since 7d
  karma api-key create --scope read --scope request --tenant acme --name ci
  karma observe runs.jsonl                    # observations for the analytics
  karma simulate --entities 20 --days 3       # observations with known anomalies
  karma entropy scan   |   karma entropy deviations --since 24h   |   karma entropy baselines
  karma rules validate rules.yaml   |   karma rules test rules.yaml --event deviation.json
  karma pipeline plan examples/pipelines/release.yaml -p version=1.4.2 -o plan.json
  karma request demo.approval -p change=bump-replicas   then   karma approve act_… -r ok
  karma request demo.provision -p fail_at=activate --wait   # compensates reserve, configure
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="karma",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--log-level", help="override KARMA_LOG_LEVEL (DEBUG, INFO, ...)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser(
        "dev",
        help="run the embedded stack (Temporal + Web UI, Kafka, worker, bridge) until Ctrl-C",
        description="Start the Temporal dev server (SQLite in the data dir, Web UI on), the "
        "tansu broker, and in this process a worker and the bridge writing to embedded "
        "ClickHouse. Stops everything on Ctrl-C or SIGTERM.",
    )
    dev.add_argument("--in-memory", action="store_true", help="keep Temporal state in memory")
    dev.set_defaults(run=service_commands.dev)

    sub.add_parser(
        "setup",
        help="provision a deployment: search attributes, Kafka topics, ClickHouse schema",
        description="Idempotent: creates what is missing and leaves the rest alone.",
    ).set_defaults(run=service_commands.setup)
    sub.add_parser(
        "worker", help="run an ActionWorkflow worker against KARMA_TEMPORAL__ADDRESS"
    ).set_defaults(run=service_commands.worker)
    sub.add_parser(
        "api",
        help="run the HTTP API against the configured servers (KARMA_API__HOST/PORT)",
        description="Serves /v1 (OpenAPI at /openapi.json, docs at /docs), /healthz and /readyz.",
    ).set_defaults(run=service_commands.api)
    sub.add_parser(
        "service",
        help="run the API, a worker and the bridge in one process",
        description="The service mode: API + worker + bridge against the configured servers.",
    ).set_defaults(run=service_commands.service)
    sub.add_parser(
        "bridge", help="run the bridge: Kafka transitions -> ClickHouse ledger"
    ).set_defaults(run=service_commands.bridge)

    refs = sub.add_parser(
        "reference-service",
        help="run the reference jobs service (POST /jobs, events to Kafka)",
        description="A stand-in for an external scheduler: accepts jobs over HTTP and reports "
        "progress and completion to the callback topic named by the caller. Point "
        "KARMA_SERVICES__JOBS at it for the demo.job action.",
    )
    refs.add_argument("--host", default="127.0.0.1")
    refs.add_argument("--port", type=int, default=8085)
    refs.set_defaults(run=service_commands.reference_service)

    req = sub.add_parser(
        "request",
        help="request an action",
        description="Validate and start an action. Nothing is started if the type or a "
        "parameter is wrong.",
    )
    req.add_argument("type", help="action type (see `karma actions`)")
    req.add_argument(
        "--param",
        "-p",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a parameter, typed by the action's metadata (repeatable)",
    )
    req.add_argument("--params-json", metavar="JSON", help="parameters as one JSON object")
    req.add_argument("--idempotency-key", "-k", help="the same key never runs twice")
    req.add_argument("--entity-id", default="", help="what the action acts on (job:abc123)")
    req.add_argument("--correlation-id", default="", help="groups related actions")
    req.add_argument("--tenant", default="")
    req.add_argument("--priority", default="normal")
    req.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
    req.add_argument(
        "--wait", "-w", action="store_true", help="follow the transitions until the action ends"
    )
    req.set_defaults(run=action_commands.request)

    status = sub.add_parser("status", help="show an action's state and transitions")
    status.add_argument("action_id")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=action_commands.status)

    cancel = sub.add_parser("cancel", help="cancel an action")
    cancel.add_argument("action_id")
    cancel.set_defaults(run=action_commands.cancel)

    callback = sub.add_parser(
        "callback",
        aliases=["signal"],  # its former name
        help="deliver a callback to a waiting (event-driven) action",
        description="Send a JSON envelope to a waiting (event-driven) action, as the bridge "
        "does for messages on actions.events. `ts` defaults to now and `event_id` to a fresh "
        "id; an event_id the action has seen is ignored. Example: "
        '{"event_type": "job.completed", "attrs": {"external_workflow_id": "job-1"}}',
    )
    callback.add_argument("action_id")
    callback.add_argument("--event", "-e", required=True, metavar="FILE|-", help="JSON file or -")
    callback.set_defaults(run=inbound_commands.callback)

    for verdict, helptext in (
        ("approve", "approve an interactive action that waits for a decision"),
        ("reject", "reject an interactive action that waits for a decision"),
    ):
        decide = sub.add_parser(verdict, help=helptext)
        decide.add_argument("action_id")
        decide.add_argument(
            "--reason", "-r", required=verdict == "reject", help="why (required to reject)"
        )
        decide.add_argument("--by", help="who decides (default: the current user)")
        decide.set_defaults(run=inbound_commands.decide, verdict=verdict)

    transitions = sub.add_parser(
        "transitions",
        aliases=["events"],  # its former name
        help="print an action's transitions (--follow: live)",
    )
    transitions.add_argument("action_id")
    transitions.add_argument(
        "--follow", "-f", action="store_true", help="keep printing until the action ends"
    )
    transitions.add_argument("--json", action="store_true", help="one JSON envelope per line")
    transitions.set_defaults(run=inbound_commands.transitions)

    dlq = sub.add_parser(
        "dlq",
        help="inspect and replay the dead-letter queue",
        description="Messages Karma could not use (bad JSON, schema errors, unknown action "
        "types, invalid parameters, orphan events) are kept on the DLQ topic with the reason "
        "and their original bytes.",
    )
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="SUBCOMMAND")
    dlq_list = dlq_sub.add_parser("list", help="show dead letters: position, reason, value")
    dlq_list.add_argument("--topic", help="only letters that came from this topic")
    dlq_list.add_argument("--limit", type=int, default=0, help="only the last N")
    dlq_list.add_argument("--json", action="store_true", help="one JSON object per line")
    dlq_list.set_defaults(run=inbound_commands.dlq_list)
    dlq_replay = dlq_sub.add_parser(
        "replay",
        help="publish chosen dead letters to their original topics again (after a fix)",
        description="POSITION is PARTITION:OFFSET on the DLQ topic, as `karma dlq list` "
        "shows. A replayed request keeps the action id of its first arrival, so replaying "
        "twice starts one action.",
    )
    dlq_replay.add_argument("positions", nargs="+", metavar="POSITION")
    dlq_replay.set_defaults(run=inbound_commands.dlq_replay)

    key_commands.add_parser(sub)
    credential_commands.add_parser(sub)
    observe_commands.add_parser(sub)
    entropy_commands.add_parsers(sub)
    rules_commands.add_parser(sub)
    pipeline_commands.add_parser(sub)
    graph_commands.add_parser(sub)
    resource_commands.add_parser(sub)

    actions = sub.add_parser("actions", help="list action types and their parameters")
    actions.add_argument("type", nargs="?", help="show one action type")
    actions.add_argument(
        "--schema", action="store_true", help="print the JSON Schema of the type's parameters"
    )
    actions.set_defaults(run=action_commands.actions)

    ledger = sub.add_parser(
        "ledger",
        help="print transitions from the ClickHouse ledger, or reconcile it with Temporal",
        usage="karma ledger [ACTION_ID ...] [--json]\n       karma ledger reconcile [--since T]",
        description="Print the ledger's transitions (all, or those of the given actions). "
        "`karma ledger reconcile` compares what Temporal recorded with the ledger and "
        "publishes the missing transitions again (idempotent: the ledger deduplicates on "
        "event_id); it prints the counts. A worker must be running to answer the status "
        "queries. `karma dev` reconciles its embedded ledger itself at start.",
    )
    ledger.add_argument("action_id", nargs="*", help="only these actions; or `reconcile`")
    ledger.add_argument("--json", action="store_true", help="one JSON object per line")
    ledger.add_argument(
        "--since",
        metavar="T",
        help="reconcile only actions running now or closed since T (ISO 8601 with a "
        "timezone, or an age: 30m, 2h, 7d)",
    )
    ledger.set_defaults(run=ledger_commands.ledger)

    stats = sub.add_parser(
        "stats",
        help="outcome rates, time to acknowledge and resolve, retries, error groups",
        description="What the ledger says about ended actions: outcome counts and rates "
        "(succeeded, failed, timed out, cancelled, skipped, compensated), time from request "
        "to accepted, started and ended (and from the observation that triggered it), exact "
        "p50/p90/p99, retries per action, the entities failing most, and the error taxonomy "
        "(error type x fingerprint). Reads the ledger, or asks the API of the `karma dev` "
        "that holds it.",
    )
    _analytics_filters(stats)
    stats.add_argument("--by", choices=("day", "type", "tenant"), help="one row per group")
    stats.add_argument(
        "--top",
        type=stats_commands.top_count,
        default=10,
        metavar="N",
        help="failing entities shown (1 to 1000)",
    )
    stats.add_argument("--json", action="store_true", help="one JSON document")
    stats.set_defaults(run=stats_commands.stats)

    report = sub.add_parser(
        "report",
        help="write an HTML report with charts of the ledger's analytics",
        description="One self-contained HTML file (the charting library is inlined: no "
        "network needed to open it): actions per hour by outcome, time to resolve per type "
        "(p50/p90/p99), the slowest and the most failing types, retries per action, and the "
        "error groups.",
    )
    report.add_argument("--html", required=True, metavar="FILE", help="where to write it")
    _analytics_filters(report)
    report.set_defaults(run=stats_commands.report)

    demo = sub.add_parser(
        "demo",
        help="run the demo on a fresh embedded stack and print its ledger",
        description="Start the embedded stack in a temporary directory on free ports, run "
        "a success, a flaky action, a permanent failure, a validation failure, a "
        "cancelled delay, an event-driven job requested and completed through Kafka, a job "
        "that never reports back (timed out), a saga that compensates, an approved change "
        "and a stateful drain, then print each action's transitions as read from ClickHouse.",
    )
    demo.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    demo.set_defaults(run=_demo)
    return parser


def _analytics_filters(parser: argparse.ArgumentParser) -> None:
    """Which ended actions `karma stats` and `karma report` count."""
    parser.add_argument("--type", metavar="T", help="only actions of this type")
    parser.add_argument("--tenant", metavar="T", help="only actions of this tenant")
    parser.add_argument(
        "--since", metavar="T", help="ended since T (ISO 8601 with a timezone, or 30m, 24h, 7d)"
    )
    parser.add_argument("--until", metavar="T", help="ended before T (as --since)")


async def _demo(args: argparse.Namespace) -> int:
    from karma.demo import run_demo

    return await run_demo(keep=args.keep)


def run(argv: Sequence[str] | None = None) -> int:
    """Parse and run one command; return its exit code."""
    return _run(build_parser().parse_args(argv))


def main() -> None:
    """The `karma` console script."""
    code = run()
    from karma.telemetry import flush

    flush()  # spans still buffered (the exporter runs in a thread os._exit would stop)
    # Skip interpreter finalization: Temporal's Rust runtime threads may still touch Python
    # while it is torn down and abort a process that already finished cleanly
    # (temporalio/sdk-python#300). Everything was stopped and flushed by now.
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def _run(args: argparse.Namespace) -> int:
    try:
        settings = get_settings()
    except SettingsError as exc:
        # Without the input values: they may be secrets (keys, passwords).
        lines = [
            f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        ]
        print("karma: invalid configuration:\n" + "\n".join(lines), file=sys.stderr)
        return EXIT_BAD_INPUT
    # The demo speaks for itself; its servers' and worker's chatter would bury the ledger.
    default_level = "WARNING" if args.command == "demo" else settings.log_level
    configure_logging((args.log_level or default_level).upper(), settings.log_format)
    from karma.telemetry import tracing_on

    tracing_on(settings.otel)  # a bridge without a Temporal client traces its inserts too
    command: Command = args.run
    try:
        return asyncio.run(command(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130
    except KarmaError as exc:
        print(f"karma: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT if not exc.retryable else EXIT_UNAVAILABLE
    except (RPCError, ConnectionError, OSError, TimeoutError) as exc:
        print(f"karma: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except RuntimeError as exc:
        # Temporal's client reports an unreachable server as a RuntimeError.
        print(f"karma: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
