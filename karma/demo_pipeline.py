"""The demo's pipeline scenes: the shipped release pipeline planned, run (its steps as
child actions, in waves), and checked in the ledger (every transition of the pipeline and
of its steps' actions there exactly once); then the shipped component graph: `plan` and
`deploy` of its database (reloading what depends on it, in order), and a second plan that
shows no change."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from karma.cli.pipeline_commands import status_tree
from karma.lifecycle import ActionState
from karma.pipelines.plan import plan
from karma.pipelines.run import PipelineStatus
from karma.pipelines.spec import load_spec

if TYPE_CHECKING:
    from workers.embedded import EmbeddedKarma

EXAMPLE = Path(__file__).parents[1] / "examples" / "pipelines" / "release.yaml"
GRAPH = Path(__file__).parents[1] / "examples" / "graph"
GRAPH_ENV = "dev"
GRAPH_ROOT = "database"
PARAMS = {"version": "1.4.2"}
LEDGER_TIMEOUT_S = 60.0


async def run_pipeline_scene(karma: EmbeddedKarma) -> int:
    """0 when the pipeline succeeded and the ledger holds each of its transitions once."""
    from karma.cli.pipeline_commands import render

    console = Console()
    if not EXAMPLE.is_file():
        console.print(f"pipeline scene skipped: {EXAMPLE} is not here (run from the repo)")
        return 0
    spec = load_spec(EXAMPLE)
    console.print(f"\nPipeline scene: {EXAMPLE.name}, planned then run", style="bold")
    render(spec, plan(spec, karma.client.registry, PARAMS), "durations: not asked", console)
    handle = await karma.client.start_pipeline(spec, PARAMS)
    status = await asyncio.wait_for(handle.result(), 120)
    console.print(status_tree(status))
    ok = await _each_once_in_the_ledger(karma, status, console)
    return 0 if ok and await _graph_scene(karma, console) else 1


async def _graph_scene(karma: EmbeddedKarma, console: Console) -> bool:
    from bridge.graph_store import GraphStore
    from karma.cli.graph_commands import render_plan
    from karma.graph.service import change_plan, deploy_tags

    if not (GRAPH / "components").is_dir():
        console.print(f"graph scene skipped: {GRAPH} is not here (run from the repo)")
        return True
    console.print(
        f"\nGraph scene: {GRAPH.name}/, plan and deploy {GRAPH_ROOT} to {GRAPH_ENV}", style="bold"
    )
    store = GraphStore(karma.ledger)
    registry = karma.client.registry

    def planned() -> Any:
        return change_plan(karma.settings, GRAPH, GRAPH_ROOT, GRAPH_ENV, registry, ledger=store)

    first, params, version = await asyncio.to_thread(planned)
    render_plan(first, console)
    await asyncio.to_thread(store.save, version)
    handle = await karma.client.start_pipeline(
        first.pipeline, params, entity_id=GRAPH_ROOT, tags=deploy_tags(first, version)
    )
    status = await asyncio.wait_for(handle.result(), 120)
    console.print(status_tree(status))
    if not await _each_once_in_the_ledger(karma, status, console):
        return False
    second, _, _ = await asyncio.to_thread(planned)
    render_plan(second, console)
    return status.state is ActionState.SUCCEEDED and not second.changed


async def _each_once_in_the_ledger(
    karma: EmbeddedKarma, status: PipelineStatus, console: Console
) -> bool:
    """Whether the ledger holds each transition of the pipeline and its steps once."""
    ids = [status.pipeline_id, *(s.action_id for s in status.steps if s.action_id)]
    expected = len(status.transitions)
    for step in status.steps:
        if step.action_id:
            expected += len((await karma.client.handle(step.action_id).status()).transitions)
    deadline = asyncio.get_running_loop().time() + LEDGER_TIMEOUT_S
    stored = 0
    while asyncio.get_running_loop().time() < deadline:
        stored = await asyncio.to_thread(karma.ledger.count_events, ids)
        if stored >= expected:
            break
        await asyncio.sleep(0.2)
    ok = status.state is ActionState.SUCCEEDED and stored == expected
    console.print(
        f"ledger: {stored} rows for {expected} transitions of the pipeline and its "
        f"{len(ids) - 1} step actions ({'each once' if stored == expected else 'MISMATCH'})",
        style="green" if ok else "red",
    )
    return ok
