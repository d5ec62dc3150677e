"""The demo's pipeline scene: the shipped release pipeline planned, run (its steps as
child actions, in waves), and checked in the ledger: every transition of the pipeline and
of its steps' actions there exactly once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from karma.lifecycle import ActionState
from karma.pipelines.plan import plan
from karma.pipelines.spec import load_spec

if TYPE_CHECKING:
    from workers.embedded import EmbeddedKarma

EXAMPLE = Path(__file__).parents[1] / "examples" / "pipelines" / "release.yaml"
PARAMS = {"version": "1.4.2"}
LEDGER_TIMEOUT_S = 60.0


async def run_pipeline_scene(karma: EmbeddedKarma) -> int:
    """0 when the pipeline succeeded and the ledger holds each of its transitions once."""
    from karma.cli.pipeline_commands import render, status_tree

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
    return 0 if ok else 1
