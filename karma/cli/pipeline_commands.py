"""`karma pipeline validate|plan|schema`: a pipeline checked and planned before it runs."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.text import Text
from rich.tree import Tree

from karma.cli.params import parse_params
from karma.cli.stats_commands import duration
from karma.errors import LedgerUnavailableError, ValidationError
from karma.pipelines.plan import PipelinePlan, check, plan
from karma.pipelines.spec import PipelineSpec, load_spec
from karma.registry import default_registry
from karma.settings import get_settings

HISTORY = "30d"  # the ledger's history a plan's durations come from


async def validate(args: argparse.Namespace) -> int:
    spec = load_spec(Path(args.file))
    check(spec, default_registry())
    print(f"{args.file}: pipeline {spec.name!r} valid, {len(spec.steps)} step(s)")
    return 0


def durations() -> tuple[dict[str, tuple[float, float]], str]:
    """p50/p90 time to resolve per action type from the ledger (or the API of the process
    holding it), and where they came from; none when the ledger cannot be read."""
    from karma.cli.stats_commands import read_stats

    query = {"since": HISTORY, "until": None, "type": None, "tenant": None, "by": "type"}
    try:
        answer = read_stats(get_settings(), query, 1000)
    except (LedgerUnavailableError, ValidationError, OSError) as exc:
        return {}, f"no durations: the ledger could not be read ({exc})"
    except Exception as exc:  # a plan without durations beats no plan  # noqa: BLE001
        return {}, f"no durations: reading the ledger failed ({type(exc).__name__}: {exc})"
    out = {}
    for group in answer["stats"]["groups"]:
        timing = group["time_to_resolve_ms"]
        if timing["count"]:
            out[group["group"]] = (float(timing["p50"]), float(timing["p90"]))
    return out, f"durations: the ledger's last {HISTORY} of each action type"


async def plan_command(args: argparse.Namespace) -> int:
    spec = load_spec(Path(args.file))
    given = parse_params(None, args.param or [])  # typed against the spec's params later
    plan(spec, default_registry(), given)  # refuse a bad spec or params before reading
    history, source = await asyncio.to_thread(durations)
    planned = plan(spec, default_registry(), given, history)
    document = planned.as_json()
    if args.output:
        spec_json = spec.model_dump(mode="json", by_alias=True)
        text = json.dumps({"spec": spec_json, **document}, default=str)
        await asyncio.to_thread(Path(args.output).write_text, text + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(document, default=str))
        return 0
    render(spec, planned, source, Console())
    if args.output:
        print(f"plan written to {args.output} (plan hash {planned.plan_hash[:16]})")
    return 0


def render(spec: PipelineSpec, planned: PipelinePlan, source: str, console: Console) -> None:
    title = Text(f"pipeline {spec.name}", style="bold")
    title.append(f"  params {json.dumps(planned.params, default=str)}", style="dim")
    tree = Tree(title)
    for number, wave in enumerate(planned.waves, start=1):
        branch = tree.add(Text(f"wave {number}", style="cyan"))
        for step_id in wave:
            step = planned.steps[step_id]
            line = Text(f"{step.id}", style="bold")
            line.append(f"  {step.action}")
            if step.runs is False:
                line.append(f"  SKIPPED ({step.reason})", style="yellow")
            elif step.runs is None:
                line.append(f"  if {step.condition}: {step.reason}", style="magenta")
            elif step.condition:
                line.append(f"  if {step.condition}: runs", style="green")
            if step.p50_ms is not None:
                line.append(f"  p50 {duration(step.p50_ms)}, p90 {duration(step.p90_ms)}", "dim")
            node = branch.add(line)
            for name, value in step.params.items():
                shown = Text(f"{name} = {json.dumps(value, default=str)}")
                if name in step.known_after:
                    shown.append(
                        f"  (known after step {', '.join(step.known_after[name])})", "magenta"
                    )
                node.add(shown)
    console.print(tree)
    whole = (
        f"expected: p50 {duration(planned.p50_ms)}, p90 {duration(planned.p90_ms)} "
        "(the longest path of the steps that run)"
        if planned.p50_ms is not None
        else "expected duration unknown: some action types have no history"
    )
    console.print(f"{whole}; {source}")
    console.print(f"plan hash {planned.plan_hash}")


async def schema(args: argparse.Namespace) -> int:
    json.dump(PipelineSpec.model_json_schema(by_alias=True), sys.stdout, indent=2)
    print()
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pipeline = sub.add_parser(
        "pipeline",
        help="pipelines of actions: check and plan a spec",
        description="A pipeline spec (YAML) is a DAG of steps, each a registered action: "
        "params may reference ${{ params.x }} and ${{ steps.<id>.outputs.y }}, `needs` orders "
        "them, `if` skips them. See examples/pipelines/.",
    )
    pipeline_sub = pipeline.add_subparsers(dest="pipeline_command", required=True)
    check_parser = pipeline_sub.add_parser("validate", help="check a spec before anything runs")
    check_parser.add_argument("file")
    check_parser.set_defaults(run=validate)
    plan_parser = pipeline_sub.add_parser(
        "plan", help="waves, resolved params, skipped steps, expected durations"
    )
    plan_parser.add_argument("file")
    plan_parser.add_argument("-p", "--param", action="append", metavar="NAME=VALUE")
    plan_parser.add_argument("-o", "--output", help="save the plan (JSON, with its hash)")
    plan_parser.add_argument("--json", action="store_true")
    plan_parser.set_defaults(run=plan_command)
    schema_parser = pipeline_sub.add_parser("schema", help="the spec's JSON Schema")
    schema_parser.set_defaults(run=schema)
