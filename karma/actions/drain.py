"""`demo.drain`: a stateful action — moves items in batches, one iteration per batch.

Karma keeps the count between iterations and continues the workflow as new every
`iterations_per_run` iterations. State version 2 calls the count `moved`; version 1 called
it `count`, and `migrate_state` upgrades such state.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from karma.executor import ActionContext
from karma.meta import ActionMeta, ExecutionMode, OutputDefinition, ParamDefinition, ParamType
from karma.registry import register_action
from karma.stateful import Break, Continue, StatefulActionExecutor

META = ActionMeta(
    type="demo.drain",
    name="Drain a queue in batches",
    description="Moves `total` items, `batch` per iteration, with progress after each batch.",
    category="demo",
    icon="layers",
    mode=ExecutionMode.STATEFUL,
    params=(
        ParamDefinition(name="total", type=ParamType.NUMBER, default=12, min=0, max=1_000_000),
        ParamDefinition(name="batch", type=ParamType.NUMBER, default=2, min=1, max=1_000_000),
        ParamDefinition(name="pause_seconds", type=ParamType.NUMBER, default=0.1, min=0, max=3600),
    ),
    outputs=(
        OutputDefinition(name="moved", type=ParamType.NUMBER),
        OutputDefinition(name="batches", type=ParamType.NUMBER),
    ),
)


@register_action(META)
class DrainExecutor(StatefulActionExecutor):
    state_version = 2
    iterations_per_run = 4

    def initial_state(self, ctx: ActionContext) -> dict[str, Any]:
        return {"moved": 0, "batches": 0}

    def migrate_state(self, state: dict[str, Any], from_version: int) -> dict[str, Any]:
        if from_version == 1:
            return {"moved": state.get("count", 0), "batches": state.get("batches", 0)}
        return super().migrate_state(state, from_version)

    async def execute_with_state(
        self, ctx: ActionContext, state: dict[str, Any]
    ) -> Continue | Break:
        total, batch = int(ctx.params["total"]), int(ctx.params["batch"])
        moved = min(total, int(state["moved"]) + batch)
        batches = int(state["batches"]) + 1
        await asyncio.sleep(0)  # the real work: move one batch
        if moved >= total:
            return Break(outputs={"moved": moved, "batches": batches})
        return Continue(
            state={"moved": moved, "batches": batches},
            outputs={"moved": moved, "batches": batches},
            progress=round(100 * moved / total, 1),
            message=f"{moved} of {total} moved",
            delay=timedelta(seconds=float(ctx.params["pause_seconds"])),
        )
