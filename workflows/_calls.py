"""The executor methods an attempt can call, each its own activity with typed input and
output. Workflows recorded before that called one `execute_action` activity with a phase:
replaying (or continuing) them keeps doing so (`workflow.patched`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from karma import names
    from karma.envelope import Transition
    from karma.interactive import Decision
    from karma.request import ActionRequest
    from karma.workflow_io import (
        AskInput,
        AskOutput,
        AttemptInput,
        AttemptOutput,
        ExecuteInput,
        ExecuteOutput,
        IterateInput,
        IterateOutput,
        LegacyExecuteInput,
        Phase,
        StepInput,
        StepOutput,
    )


Out = TypeVar("Out", bound=AttemptOutput)


@dataclass(frozen=True)
class Call(Generic[Out]):
    """One executor method with the arguments of this call."""

    activity: str
    # The phase of the legacy `execute_action` for runs recorded before; None for a kind
    # added since (it has no runs from before).
    phase: Phase | None
    input_type: type[AttemptInput]
    result_type: type[Out]
    arguments: dict[str, Any] = field(default_factory=dict)

    def invocation(
        self,
        request: ActionRequest,
        params: dict[str, Any],
        attempt: int,
        pending: list[Transition],
        *,
        core_2: bool,
    ) -> tuple[str, BaseModel]:
        """The activity to run and its input (`core_2`: the request was made for contract
        2; see `RunContext.core_2`)."""
        common: dict[str, Any] = {
            "request": request,
            "params": params,
            "attempt": attempt,
            "pending": pending,
        }
        if core_2 or self.phase is None:
            return self.activity, self.input_type(**common, **self.arguments)
        return names.EXECUTE_ACTION, LegacyExecuteInput(
            **common, phase=self.phase, **self.arguments
        )


def execute(decision: Decision | None = None) -> Call[ExecuteOutput]:
    arguments = {"decision": decision} if decision is not None else {}
    return Call(names.EXECUTE, Phase.EXECUTE, ExecuteInput, ExecuteOutput, arguments)


def ask() -> Call[AskOutput]:
    return Call(names.ASK, Phase.ASK, AskInput, AskOutput)


def run_step(step: str, previous: dict[str, Any]) -> Call[StepOutput]:
    return Call(
        names.RUN_STEP, Phase.STEP, StepInput, StepOutput, {"step": step, "previous": previous}
    )


def iterate(state: dict[str, Any] | None, state_version: int) -> Call[IterateOutput]:
    arguments = {"state": state, "state_version": state_version}
    return Call(names.ITERATE, Phase.ITERATE, IterateInput, IterateOutput, arguments)
