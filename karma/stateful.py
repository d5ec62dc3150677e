"""Stateful actions: an iterative executor whose state Karma keeps between iterations.

    class Drain(StatefulActionExecutor):
        state_version = 2

        async def execute_with_state(self, ctx: ActionContext, state: dict) -> Continue | Break:
            moved = state.get("moved", 0) + await move_batch()
            if moved >= total:
                return Break(outputs={"moved": moved})
            return Continue(state={"moved": moved}, progress=100 * moved / total,
                            delay=timedelta(seconds=30))

        def migrate_state(self, state: dict, from_version: int) -> dict:
            return {"moved": state["count"]}  # version 1 called it "count"

Each iteration is one activity with the action's retry policy and emits an
`action.progress` event. The workflow continues as new every `iterations_per_run`
iterations, so its history stays small; the action id and the event seq carry over.
"""

from __future__ import annotations

from abc import abstractmethod
from datetime import timedelta
from typing import Any, ClassVar

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from karma.errors import PermanentError
from karma.executor import ActionContext, ActionResult, BaseActionExecutor
from karma.meta import ExecutionMode


class Continue(BaseModel):
    """Another iteration follows (after `delay`), starting from `state`."""

    model_config = ConfigDict(populate_by_name=True)

    state: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("outputs", "output"),  # `output`: the former name
        description="outputs so far",
    )
    progress: float | None = Field(default=None, ge=0, le=100)
    message: str = ""
    delay: timedelta = timedelta(0)


class Break(BaseModel):
    """The last iteration: the action succeeds with `outputs`."""

    model_config = ConfigDict(populate_by_name=True)

    outputs: dict[str, Any] = Field(
        default_factory=dict, validation_alias=AliasChoices("outputs", "output")
    )


class StatefulActionExecutor(BaseActionExecutor, kind=ExecutionMode.STATEFUL):
    """Iterates `execute_with_state` until it returns Break."""

    state_version: ClassVar[int] = 1
    iterations_per_run: ClassVar[int] = 100

    @classmethod
    def check_kind(cls, source: str) -> None:
        per_run = cls.iterations_per_run
        if not isinstance(per_run, int) or per_run < 1:
            raise TypeError(f"{source}: iterations_per_run must be a positive integer")

    async def execute(self, ctx: ActionContext) -> ActionResult:
        raise PermanentError(f"{type(self).__name__} runs by iterations (execute_with_state)")

    def initial_state(self, ctx: ActionContext) -> dict[str, Any]:
        """The state of the first iteration."""
        return {}

    def migrate_state(self, state: dict[str, Any], from_version: int) -> dict[str, Any]:
        """Upgrade state written by an older `state_version` of this executor."""
        raise PermanentError(
            f"{type(self).__name__} cannot read state version {from_version} "
            f"(it writes version {self.state_version}); implement migrate_state"
        )

    @abstractmethod
    async def execute_with_state(
        self, ctx: ActionContext, state: dict[str, Any]
    ) -> Continue | Break:
        """One iteration."""
