"""`karma graph build|show|history`, `karma plan` and `karma deploy`: the component graph,
what a change would touch, and applying it as a pipeline."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from karma.graph.model import Graph
from karma.graph.plan import ChangePlan, GraphVersion
from karma.registry import default_registry
from karma.settings import get_settings

ENV_DEFAULT = "dev"


def _dir(args: argparse.Namespace) -> Path:
    return Path(args.dir) if args.dir else get_settings().graph.dir


async def build_command(args: argparse.Namespace) -> int:
    from karma.graph.service import built, graph_ledger

    settings = get_settings()
    _, version, _ = await asyncio.to_thread(
        built, settings, _dir(args), args.env, default_registry()
    )

    def store() -> None:
        with graph_ledger(settings) as ledger:
            ledger.save(version)

    await asyncio.to_thread(store)
    print(
        f"graph {version.version} for {version.env}: {len(version.nodes)} component(s), "
        f"{len(version.edges)} edge(s); stored in the ledger ({_dir(args)})"
    )
    for node in version.nodes:
        deps = f" <- {', '.join(node.depends_on)}" if node.depends_on else ""
        print(f"  {node.name} ({node.kind}) config {node.config_hash[:12]}{deps}")
    return 0


async def show_command(args: argparse.Namespace) -> int:
    from karma.graph.service import built

    graph, version, _ = await asyncio.to_thread(
        built, get_settings(), _dir(args), args.env, default_registry()
    )
    if args.format == "json":
        print(version.model_dump_json(indent=2))
    elif args.format == "dot":
        print(dot(version))
    else:
        Console().print(tree(graph, version))
    return 0


def dot(version: GraphVersion) -> str:
    """Graphviz: an arrow from each component to what depends on it (the way a change
    propagates)."""
    lines = [f'digraph "karma-{version.env}" {{', "  rankdir=LR;", "  node [shape=box];"]
    for node in version.nodes:
        label = f"{node.name}\\n{node.kind} {node.config_hash[:8]}"
        lines.append(f'  "{node.name}" [label="{label}"];')
    lines += [f'  "{dep}" -> "{name}";' for name, dep in version.edges]
    return "\n".join([*lines, "}"])


def tree(graph: Graph, version: GraphVersion) -> Tree:
    """From the components that depend on nothing down to what depends on them."""
    below = graph.dependents()
    root = Tree(Text(f"graph {version.version[:12]} ({version.env})", style="bold"))
    shown: set[str] = set()

    def add(branch: Tree, name: str) -> None:
        node = version.node(name)
        assert node is not None
        line = Text(name, style="bold")
        line.append(f"  {node.kind}  config {node.config_hash[:8]}", style="dim")
        if name in shown:
            branch.add(line.append("  (above)", style="dim"))
            return
        shown.add(name)
        child = branch.add(line)
        for dependent in below[name]:
            add(child, dependent)

    for name in graph.order():
        if not graph.components[name].depends_on:
            add(root, name)
    return root


async def history_command(args: argparse.Namespace) -> int:
    from karma.graph.service import graph_ledger

    def read() -> list[dict[str, Any]]:
        with graph_ledger(get_settings()) as ledger:
            return ledger.deployments(args.component, args.env or "", limit=args.limit)

    rows = await asyncio.to_thread(read)
    if args.json:
        print(json.dumps(rows, default=str))
        return 0
    table = Table(
        title=f"deployments of {args.component}" + (f" to {args.env}" if args.env else "")
    )
    for column in ("requested", "env", "state", "pipeline", "graph version", "config", "reloaded"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row["requested_at"])[:19], row["env"], row["state"], row["pipeline_id"],
            row["graph_version"][:12], row["graph_config_hash"][:12], ", ".join(row["reloaded"]),
        )  # fmt: skip
    Console().print(table if rows else f"no deployment of {args.component} in the ledger")
    return 0


def render_plan(planned: ChangePlan, console: Console) -> None:
    title = Text(f"plan: deploy {planned.component} to {planned.env}", style="bold")
    console.print(title)
    if planned.deployed_version:
        console.print(
            f"  last deployed by {planned.deployed_by} (graph {planned.deployed_version[:12]}); "
            f"now graph {planned.version[:12]}"
        )
    else:
        console.print(f"  never deployed to {planned.env}: everything is new")
    if planned.compared:
        console.print(f"  compared {planned.compared}", style="dim")
    if not planned.changed:
        console.print("  no change: config and runtime values are as deployed", style="green")
    if planned.config_changed and planned.deployed_version:
        console.print("  config changed", style="yellow")
        for key, (before, after) in planned.config_changes.items():
            console.print(f"    ~ {key}: {json.dumps(before)} -> {json.dumps(after)}")
    for change in planned.runtime_changes:
        mark = {"added": "+", "removed": "-", "changed": "~"}[change.change]
        value = f" = {change.value}" if change.value else ""
        console.print(f"    {mark} runtime {change.name}{value} ({change.change})", style="yellow")
    if planned.reloads:
        console.print(f"  then reloads, in order: {' -> '.join(planned.reloads)}")
    else:
        console.print("  nothing depends on it that reloads")
    steps = Tree(Text(f"pipeline {planned.pipeline.name}", style="cyan"))
    for step in planned.pipeline.steps:
        needs = f"  after {', '.join(step.needs)}" if step.needs else ""
        steps.add(Text(f"{step.id}  {step.action}{needs}"))
    console.print(steps)


async def plan_command(args: argparse.Namespace) -> int:
    from karma.graph.service import change_plan

    planned, _, _ = await asyncio.to_thread(
        change_plan, get_settings(), _dir(args), args.component, args.env, default_registry()
    )
    if args.output:
        text = planned.model_dump_json(indent=2, by_alias=True)
        await asyncio.to_thread(Path(args.output).write_text, text + "\n", encoding="utf-8")
    if args.json:
        print(planned.model_dump_json(by_alias=True))
        return 0
    render_plan(planned, Console())
    return 0


async def deploy_command(args: argparse.Namespace) -> int:
    from karma.cli.action_commands import connect
    from karma.cli.pipeline_commands import follow
    from karma.graph.service import change_plan, deploy_tags, graph_ledger

    settings = get_settings()
    planned, params, version = await asyncio.to_thread(
        change_plan, settings, _dir(args), args.component, args.env, default_registry()
    )
    console = Console()
    render_plan(planned, console)
    if not planned.changed and not args.force:
        console.print("nothing to deploy (--force deploys all the same)")
        return 0

    def store() -> None:
        with graph_ledger(settings) as ledger:
            ledger.save(version)

    await asyncio.to_thread(store)
    client = await connect()
    handle = await client.start_pipeline(
        planned.pipeline, params, entity_id=planned.component, tags=deploy_tags(planned, version)
    )
    print(f"deploy pipeline {handle.pipeline_id} started; workflow id {handle.workflow_id}")
    if not args.wait:
        print(f"follow it: karma pipeline status {handle.pipeline_id}")
        return 0
    return await follow(handle, console)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    graph = sub.add_parser(
        "graph",
        help="the component graph: build, show, history",
        description="Components are YAML files in <dir>/components (depends_on, config, the "
        "actions that deploy and reload them); runtime values per environment come from "
        "<dir>/params/<env>.yaml or AWS SSM (KARMA_GRAPH__STORE=ssm). See examples/graph/.",
    )
    graph_sub = graph.add_subparsers(dest="graph_command", required=True)
    build_parser = graph_sub.add_parser("build", help="check the graph and store its version")
    show_parser = graph_sub.add_parser("show", help="the graph as a tree, Graphviz dot or JSON")
    show_parser.add_argument("--format", choices=("tree", "dot", "json"), default="tree")
    for parser, run in ((build_parser, build_command), (show_parser, show_command)):
        parser.add_argument("--env", default=ENV_DEFAULT, help=f"default: {ENV_DEFAULT}")
        parser.add_argument("--dir", help="the config directory (default: KARMA_GRAPH__DIR)")
        parser.set_defaults(run=run)
    history = graph_sub.add_parser("history", help="a component's deployments, from the ledger")
    history.add_argument("component")
    history.add_argument("env", nargs="?")
    history.add_argument("--limit", type=int, default=50)
    history.add_argument("--json", action="store_true")
    history.set_defaults(run=history_command)
    plan = sub.add_parser(
        "plan", help="what deploying a component changes, and what it reloads, in order"
    )
    plan.add_argument("component")
    plan.add_argument("env")
    plan.add_argument("--dir", help="the config directory (default: KARMA_GRAPH__DIR)")
    plan.add_argument("-o", "--output", help="save the plan (JSON)")
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(run=plan_command)
    deploy = sub.add_parser(
        "deploy", help="deploy a component, then reload what depends on it (a pipeline)"
    )
    deploy.add_argument("component")
    deploy.add_argument("env")
    deploy.add_argument("--dir", help="the config directory (default: KARMA_GRAPH__DIR)")
    deploy.add_argument("--wait", action="store_true", help="a live tree until it ends")
    deploy.add_argument("--force", action="store_true", help="deploy even without a change")
    deploy.set_defaults(run=deploy_command)
