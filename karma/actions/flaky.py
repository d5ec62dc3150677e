"""`demo.flaky`: fails transiently for the first N attempts, then succeeds."""

from __future__ import annotations

from datetime import timedelta

from karma.errors import TransientError
from karma.executor import ActionContext, ActionResult, BaseActionExecutor
from karma.meta import ActionMeta, OutputDefinition, ParamDefinition, ParamType, RetryPolicy
from karma.registry import register_action

META = ActionMeta(
    type="demo.flaky",
    name="Flaky demo action",
    description="Raises a transient error on the first `failures` attempts, then succeeds.",
    category="demo",
    icon="zap",
    idempotent=True,
    params=(
        ParamDefinition(name="failures", type=ParamType.NUMBER, default=2, min=0, max=100),
        ParamDefinition(
            name="retry_after",
            type=ParamType.NUMBER,
            min=0,
            description="seconds the failure asks to wait (as a Retry-After would)",
        ),
    ),
    outputs=(OutputDefinition(name="attempts", type=ParamType.NUMBER),),
    retry=RetryPolicy(
        max_attempts=5,
        initial_interval=timedelta(milliseconds=200),
        maximum_interval=timedelta(seconds=2),
    ),
)


@register_action(META)
class FlakyExecutor(BaseActionExecutor):
    async def execute(self, ctx: ActionContext) -> ActionResult:
        failures = int(ctx.params["failures"])
        if ctx.attempt <= failures:
            raise TransientError(
                f"simulated transient failure {ctx.attempt} of {failures}",
                retry_after=ctx.params.get("retry_after"),
            )
        return ActionResult(outputs={"attempts": ctx.attempt})
