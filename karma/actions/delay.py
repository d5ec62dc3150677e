"""`delay`: wait for a number of seconds. Cancellable; useful for tests and pacing."""

from __future__ import annotations

import asyncio
import time

from karma.executor import ActionContext, ActionResult, BaseActionExecutor
from karma.meta import ActionMeta, OutputDefinition, ParamDefinition, ParamType
from karma.registry import register_action

META = ActionMeta(
    type="delay",
    name="Delay",
    description="Waits for the given number of seconds, then succeeds.",
    category="utility",
    icon="clock",
    idempotent=True,
    params=(
        ParamDefinition(name="seconds", type=ParamType.NUMBER, required=True, min=0, max=86_400),
    ),
    outputs=(OutputDefinition(name="slept_seconds", type=ParamType.NUMBER),),
)


@register_action(META)
class DelayExecutor(BaseActionExecutor):
    async def execute(self, ctx: ActionContext) -> ActionResult:
        started = time.monotonic()
        await asyncio.sleep(float(ctx.params["seconds"]))
        return ActionResult(outputs={"slept_seconds": round(time.monotonic() - started, 3)})
