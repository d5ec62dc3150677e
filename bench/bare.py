"""The baseline: a bare Temporal workflow with one activity, and an equally empty action."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow

from karma.executor import ActionContext, ActionResult, BaseActionExecutor
from karma.meta import ActionMeta


@activity.defn(name="bare_activity")
async def bare_activity(value: str) -> str:
    return value


@workflow.defn(name="BareWorkflow")
class BareWorkflow:
    @workflow.run
    async def run(self, value: str) -> str:
        return await workflow.execute_activity(
            bare_activity, value, start_to_close_timeout=timedelta(seconds=30)
        )


class NoopExecutor(BaseActionExecutor):
    """Does nothing, like `bare_activity`, so the ratio measures Karma's own cost."""

    meta = ActionMeta(type="bench.noop", name="No-op", description="benchmark baseline action")

    async def execute(self, ctx: ActionContext) -> ActionResult:
        return ActionResult()
