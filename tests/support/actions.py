"""Executors that exist only for tests (registered on the in-process test worker)."""

from __future__ import annotations

from datetime import timedelta

from karma.errors import PermanentError
from karma.executor import ActionContext, ActionResult, BaseActionExecutor
from karma.meta import ActionMeta, OutputDefinition, ParamDefinition, ParamType, RetryPolicy
from karma.registry import register_action


@register_action(
    ActionMeta(
        type="test.secret",
        name="Uses a secret",
        params=(
            ParamDefinition(name="user", type=ParamType.STRING, required=True),
            ParamDefinition(name="token", type=ParamType.STRING, required=True, secret=True),
        ),
        outputs=(OutputDefinition(name="token_length", type=ParamType.NUMBER),),
    )
)
class SecretExecutor(BaseActionExecutor):
    async def execute(self, ctx: ActionContext) -> ActionResult:
        ctx.logger.info("calling the service as %s", ctx.params["user"])
        return ActionResult(outputs={"token_length": len(ctx.params["token"])})


@register_action(
    ActionMeta(
        type="test.permanent",
        name="Always fails permanently",
        retry=RetryPolicy(max_attempts=5),
        outputs=(OutputDefinition(name="never"),),
    )
)
class PermanentExecutor(BaseActionExecutor):
    async def execute(self, ctx: ActionContext) -> ActionResult:
        raise PermanentError("the target rejected the change")


@register_action(
    ActionMeta(
        type="test.crash",
        name="Raises an unexpected exception",
        retry=RetryPolicy(max_attempts=2, initial_interval=timedelta(milliseconds=50)),
    )
)
class CrashExecutor(BaseActionExecutor):
    async def execute(self, ctx: ActionContext) -> ActionResult:
        raise RuntimeError("boom")


TEST_EXECUTORS = [SecretExecutor, PermanentExecutor, CrashExecutor]
