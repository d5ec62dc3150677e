"""`karma pipeline validate|plan|schema`: a pipeline checked and planned before it runs."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError as PydanticValidationError
from rich.console import Console
from rich.live import Live
from rich.text import Text
from rich.tree import Tree

from karma.cli.params import parse_params
from karma.cli.stats_commands import duration
from karma.errors import FieldError, LedgerUnavailableError, ValidationError, field_errors
from karma.lifecycle import ActionState
from karma.params import REDACTED
from karma.pipelines.client import PipelineHandle, holds_redacted, prepare, shown_spec
from karma.pipelines.plan import PipelinePlan, check, plan
from karma.pipelines.run import PipelineStatus, StepState
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
        spec_json = shown_spec(spec, default_registry())
        source = str(await asyncio.to_thread(Path(args.file).resolve))
        saved = {"source": source, "spec": spec_json, **document}
        text = json.dumps(saved, default=str)
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


def _run_input(args: argparse.Namespace) -> tuple[PipelineSpec, dict[str, Any], Any]:
    """The spec, the params and the saved plan (if any) a `run` starts from."""
    given = parse_params(None, args.param or [])
    if args.plan is None:
        if args.file is None:
            raise ValidationError([FieldError(field="file", reason="give a spec or --plan")])
        return load_spec(Path(args.file)), given, None
    try:
        saved = json.loads(Path(args.plan).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValidationError([FieldError(field="plan", reason=str(exc))]) from exc
    if not isinstance(saved, dict):
        raise ValidationError([FieldError(field="plan", reason="not a JSON object")])
    source = args.file or saved.get("source")
    if source and Path(source).is_file():
        spec = load_spec(Path(source))  # checked against the plan's hash: changed since?
    else:
        try:
            spec = PipelineSpec.model_validate(saved.get("spec"))
        except PydanticValidationError as exc:
            raise ValidationError(field_errors(exc)) from exc
        if holds_redacted(spec, default_registry()):
            reason = f"its spec {source or ''} is gone and the plan holds no secret values"
            raise ValidationError([FieldError(field="plan", reason=reason)])
    params = {k: v for k, v in (saved.get("params") or {}).items() if v != REDACTED}
    missing = [n for n, p in spec.params.items() if p.secret and p.required and n not in given]
    if missing:
        reason = "a saved plan holds no secret values: give them again with -p"
        raise ValidationError([FieldError(field=f"params.{n}", reason=reason) for n in missing])
    return spec, {**params, **given}, saved


async def run(args: argparse.Namespace) -> int:
    from karma.cli.action_commands import connect

    spec, params, saved = _run_input(args)
    prepare(spec, default_registry(), params, sealer=None, saved_plan=saved)  # before connecting
    client = await connect()
    handle = await client.start_pipeline(
        spec, params, idempotency_key=args.idempotency_key or "",
        entity_id=args.entity_id, tenant=args.tenant, saved_plan=saved,
    )  # fmt: skip
    verb = "started" if handle.created else "already started (same idempotency key)"
    print(f"pipeline {handle.pipeline_id} {verb}; workflow id {handle.workflow_id}")
    if not args.wait:
        print(f"follow it: karma pipeline status {handle.pipeline_id}")
        return 0
    return await follow(handle, Console())


async def follow(handle: PipelineHandle, console: Console) -> int:
    """A live tree of the run's steps until it ends; 0 when it SUCCEEDED."""
    if console.is_terminal:
        with Live(console=console, refresh_per_second=4) as live:
            async for status in handle.watch():
                live.update(status_tree(status))
    else:
        async for status in handle.watch(poll_s=1.0):
            console.print(status_tree(status))
    final = await handle.result()
    console.print(status_tree(final))
    return 0 if final.state is ActionState.SUCCEEDED else 1


STEP_STYLE = {
    StepState.PENDING: "dim", StepState.RUNNING: "cyan", StepState.SUCCEEDED: "green",
    StepState.FAILED: "red", StepState.CANCELLED: "red", StepState.TIMED_OUT: "red",
    StepState.SKIPPED: "yellow", StepState.NOT_RUN: "yellow", StepState.COMPENSATED: "magenta",
}  # fmt: skip


def status_tree(status: PipelineStatus) -> Tree:
    """A pipeline's steps and their states, in the spec's order."""
    style = {"SUCCEEDED": "green", "FAILED": "red", "CANCELLED": "red"}.get(status.state, "cyan")
    title = Text(f"pipeline {status.name} {status.pipeline_id} ", style="bold")
    title.append(status.state.value, style=style)
    if status.error is not None:
        title.append(f"  {status.error.message}", style="red")
    tree = Tree(title)
    for step in status.steps:
        line = Text(f"{step.id}", style="bold")
        line.append(f"  {step.action}  ")
        line.append(step.state.value, style=STEP_STYLE[step.state])
        if step.action_id:
            line.append(f"  {step.action_id}", style="dim")
        if step.reason:
            line.append(f"  ({step.reason})", style="yellow")
        if step.error is not None:
            line.append(f"  {step.error.type.value}: {step.error.message}", style="red")
        tree.add(line)
    return tree


async def status_command(args: argparse.Namespace) -> int:
    from karma.cli.action_commands import connect

    client = await connect()
    status = await client.pipeline(args.pipeline_id).status()
    if args.json:
        print(status.model_dump_json(indent=2))
    else:
        Console().print(status_tree(status))
    return 0


async def cancel_command(args: argparse.Namespace) -> int:
    from karma.cli.action_commands import connect

    client = await connect()
    await client.pipeline(args.pipeline_id).cancel()
    print(f"cancellation requested for pipeline {args.pipeline_id}")
    return 0


async def schema(args: argparse.Namespace) -> int:
    json.dump(PipelineSpec.model_json_schema(by_alias=True), sys.stdout, indent=2)
    print()
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pipeline = sub.add_parser(
        "pipeline",
        help="pipelines of actions: check, plan, run and follow a spec",
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
    run_parser = pipeline_sub.add_parser(
        "run", help="run a spec (or a saved plan, refused if the spec or registry changed)"
    )
    run_parser.add_argument("file", nargs="?", help="the spec (default: the saved plan's)")
    run_parser.add_argument("--plan", help="a plan saved by `karma pipeline plan -o`")
    run_parser.add_argument("-p", "--param", action="append", metavar="NAME=VALUE")
    run_parser.add_argument("--idempotency-key", help="the same key again: the same run")
    run_parser.add_argument("--entity-id", default="")
    run_parser.add_argument("--tenant", default="")
    run_parser.add_argument("--wait", action="store_true", help="a live tree until it ends")
    run_parser.set_defaults(run=run)
    status_parser = pipeline_sub.add_parser("status", help="a run's steps and their states")
    status_parser.add_argument("pipeline_id")
    status_parser.add_argument("--json", action="store_true")
    status_parser.set_defaults(run=status_command)
    cancel_parser = pipeline_sub.add_parser("cancel", help="cancel a run and its steps")
    cancel_parser.add_argument("pipeline_id")
    cancel_parser.set_defaults(run=cancel_command)
    schema_parser = pipeline_sub.add_parser("schema", help="the spec's JSON Schema")
    schema_parser.set_defaults(run=schema)
