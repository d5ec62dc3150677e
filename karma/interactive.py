"""Interactive actions: a person approves or rejects before the work is done.

    class Deploy(InteractiveActionExecutor):
        async def ask(self, ctx: ActionContext) -> AwaitDecision:
            return AwaitDecision(request={"diff": ...}, timeout=timedelta(hours=4),
                                 on_timeout=TimeoutPolicy.ESCALATE)

        async def execute(self, ctx: ActionContext) -> ActionResult:
            ...  # runs once approved; ctx.decision says by whom and why

`ask` says what is asked (`AwaitDecision`); the answer (`Decision`) arrives as the
`decide` Temporal Update (`karma approve|reject`), validated before it is accepted, or
comes from the timeout policy. A rejection ends the action FAILED with error type
`rejected`.
"""

from __future__ import annotations

from abc import abstractmethod
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from karma.errors import FieldError, ValidationError
from karma.executor import ActionContext, ActionResult, BaseActionExecutor, Skip
from karma.meta import ExecutionMode


class Verdict(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class TimeoutPolicy(StrEnum):
    """What happens when nobody decides in time."""

    REJECT = "reject"
    APPROVE = "approve"
    ESCALATE = "escalate"  # emit action.escalated and wait once more; then time out


class AwaitDecision(BaseModel):
    """Returned by an interactive executor's `ask`: show `request` to a person and wait."""

    request: dict[str, Any] = Field(description="what the person decides on (shown in status)")
    timeout: timedelta
    on_timeout: TimeoutPolicy = TimeoutPolicy.REJECT
    outputs: dict[str, Any] = Field(default_factory=dict, description="known so far")


class DecisionInput(BaseModel):
    """The payload of the `decide` update; checked by `validated` before it is accepted."""

    decision: str = ""
    by: str = ""
    reason: str = ""

    def validated(self) -> Decision:
        """The decision, or a ValidationError naming every bad field."""
        errors = []
        if self.decision not in {v.value for v in Verdict}:
            errors.append(
                FieldError(
                    field="decision",
                    reason=f"must be 'approve' or 'reject', got {self.decision!r}",
                )
            )
        if not self.by.strip():
            errors.append(FieldError(field="by", reason="say who decides"))
        if self.decision == Verdict.REJECT and not self.reason.strip():
            errors.append(FieldError(field="reason", reason="a rejection needs a reason"))
        if errors:
            raise ValidationError(errors)
        return Decision(verdict=Verdict(self.decision), by=self.by.strip(), reason=self.reason)


class Decision(BaseModel):
    """A decision as recorded; `at` is set by the workflow, `automatic` by a timeout policy."""

    verdict: Verdict
    by: str
    reason: str = ""
    at: datetime | None = None
    automatic: bool = False

    @property
    def approved(self) -> bool:
        return self.verdict is Verdict.APPROVE


class InteractiveActionExecutor(BaseActionExecutor, kind=ExecutionMode.INTERACTIVE):
    """`ask` prepares the question; `execute` does the work once approved."""

    @abstractmethod
    async def ask(self, ctx: ActionContext) -> AwaitDecision | Skip:
        """What to ask, how long to wait and what a timeout means (or Skip: no need)."""

    @abstractmethod
    async def execute(self, ctx: ActionContext) -> ActionResult | Skip:
        """The work, after approval (retried under the action's policy)."""
