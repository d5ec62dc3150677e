"""Interactive actions: a person approves or rejects before the work is done.

    class Deploy(InteractiveActionExecutor):
        async def ask(self, ctx: ActionContext) -> AwaitDecision:
            return AwaitDecision(request={"diff": ...}, timeout=timedelta(hours=4),
                                 on_timeout=TimeoutPolicy.ESCALATE)

        async def execute(self, ctx: ActionContext) -> ActionResult:
            ...  # runs once approved; ctx.decision says by whom and why

The decision arrives as the `decide` Temporal Update (`karma approve|reject`), validated
before it is accepted. A rejection ends the action FAILED with error type `rejected`.
"""

from __future__ import annotations

from abc import abstractmethod

from karma.decision import AwaitDecision
from karma.executor import ActionContext, ActionResult, BaseActionExecutor, Skip


class InteractiveActionExecutor(BaseActionExecutor):
    """`ask` prepares the question; `execute` does the work once approved."""

    @abstractmethod
    async def ask(self, ctx: ActionContext) -> AwaitDecision | Skip:
        """What to ask, how long to wait and what a timeout means (or Skip: no need)."""

    @abstractmethod
    async def execute(self, ctx: ActionContext) -> ActionResult | Skip:
        """The work, after approval (retried under the action's policy)."""
