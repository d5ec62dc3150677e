"""Transactional actions: ordered steps, each undone by its own compensation (a saga).

    class Provision(TransactionalActionExecutor):
        steps = ("reserve", "configure", "activate")

        async def run_step(self, ctx: StepContext) -> StepResult:
            ...  # ctx.step names the step; ctx.previous holds earlier steps' outputs
            return StepResult(outputs={...}, compensation={"reservation": rid})

        async def compensate(self, ctx: CompensationContext) -> None:
            ...  # undo ctx.step with ctx.compensation; must be safe to repeat

When a step fails after its retries, or the action is cancelled, the steps that completed
are compensated in reverse order, each retried under `compensation_retry`.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, Field

from karma.errors import ErrorInfo, PermanentError
from karma.executor import (
    ActionContext,
    ActionResult,
    BaseActionExecutor,
    Skip,
    _default_logger,
    credential_from,
)
from karma.meta import ExecutionMode, RetryPolicy

if TYPE_CHECKING:
    from karma.credentials import CredentialManager


class StepResult(BaseModel):
    """What a completed step returns: outputs, and the data its compensation will need."""

    outputs: dict[str, Any] = Field(default_factory=dict)
    compensation: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class StepContext(ActionContext):
    """One attempt of one step: which step, and what the steps before it returned."""

    step: str
    previous: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CompensationContext:
    """Undo one completed step."""

    action_id: str
    action_type: str
    params: Mapping[str, Any]
    step: str
    compensation: Mapping[str, Any]
    attempt: int
    cause: ErrorInfo | None = None  # why the action is rolled back
    logger: logging.LoggerAdapter[logging.Logger] = field(default_factory=_default_logger)
    credentials: CredentialManager | None = None  # the worker's (see karma.credentials)

    async def credential(self, credential_id: str, scope: str = "*") -> str:
        """A credential's secret, as the step that is undone had it (ActionContext.credential)."""
        return await credential_from(self.credentials, credential_id, scope)


class TransactionalActionExecutor(BaseActionExecutor, kind=ExecutionMode.TRANSACTIONAL):
    """Runs `steps` in order through `run_step`; undoes them through `compensate`."""

    steps: ClassVar[tuple[str, ...]]
    compensation_retry: ClassVar[RetryPolicy] = RetryPolicy(
        max_attempts=5,
        initial_interval=timedelta(seconds=1),
        maximum_interval=timedelta(seconds=30),
    )

    @classmethod
    def check_kind(cls, source: str) -> None:
        steps = getattr(cls, "steps", ())
        if not steps or len(set(steps)) != len(steps):
            raise TypeError(f"{source}: a transactional action needs distinct step names")

    async def execute(self, ctx: ActionContext) -> ActionResult:
        raise PermanentError(f"{type(self).__name__} runs by steps (run_step), not execute")

    @abstractmethod
    async def run_step(self, ctx: StepContext) -> StepResult | Skip:
        """Run one attempt of step `ctx.step` (Skip: the action is unnecessary; it ends
        SKIPPED and nothing is compensated)."""

    @abstractmethod
    async def compensate(self, ctx: CompensationContext) -> None:
        """Undo step `ctx.step`; raise to have the compensation retried."""
