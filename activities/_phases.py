"""Which executor method an `execute_action` attempt calls, and what it may return."""

from __future__ import annotations

from karma.decision import AwaitDecision
from karma.errors import PermanentError
from karma.executor import (
    ActionContext,
    ActionResult,
    AwaitEvent,
    BaseActionExecutor,
    EventDrivenActionExecutor,
    Skip,
)
from karma.interactive import InteractiveActionExecutor
from karma.saga import StepResult, TransactionalActionExecutor
from karma.stateful import Break, Continue, StatefulActionExecutor
from karma.workflow_io import ExecuteInput, ExecuteOutput, Iteration, Phase

Returned = ActionResult | AwaitEvent | Skip | AwaitDecision | StepResult | Continue | Break


async def run_phase(
    executor: BaseActionExecutor, inp: ExecuteInput, ctx: ActionContext
) -> Returned:
    """Call the executor method the phase stands for."""
    phase = inp.phase
    if phase is Phase.ITERATE:
        if not isinstance(executor, StatefulActionExecutor):
            raise PermanentError(f"{type(executor).__name__} is not a StatefulActionExecutor")
        if inp.state is None:
            state = executor.initial_state(ctx)
        elif inp.state_version != executor.state_version:
            state = executor.migrate_state(dict(inp.state), inp.state_version)
        else:
            state = dict(inp.state)
        return await executor.execute_with_state(ctx, state)
    if phase is Phase.ASK:
        if not isinstance(executor, InteractiveActionExecutor):
            raise PermanentError(f"{type(executor).__name__} is not an InteractiveActionExecutor")
        return await executor.ask(ctx)
    if phase is Phase.STEP:
        if not isinstance(executor, TransactionalActionExecutor):
            raise PermanentError(f"{type(executor).__name__} is not a TransactionalActionExecutor")
        return await executor.run_step(ctx)
    return await executor.execute(ctx)


def output_of(executor: BaseActionExecutor, result: Returned) -> ExecuteOutput:
    """What the executor returned, checked against what its kind may return."""
    match result:
        case ActionResult():
            return ExecuteOutput(outputs=result.outputs)
        case Skip():
            return ExecuteOutput(outputs=result.outputs, skipped=result.reason)
        case StepResult():
            return ExecuteOutput(outputs=result.outputs, compensation=result.compensation)
        case AwaitDecision():
            return ExecuteOutput(outputs=result.outputs, asking=result)
        case Continue() if isinstance(executor, StatefulActionExecutor):
            iteration = Iteration(
                done=False,
                state=result.state,
                state_version=executor.state_version,
                progress=result.progress,
                message=result.message,
                delay=result.delay,
            )
            return ExecuteOutput(outputs=result.output, iteration=iteration)
        case Break() if isinstance(executor, StatefulActionExecutor):
            done = Iteration(done=True, state_version=executor.state_version)
            return ExecuteOutput(outputs=result.output, iteration=done)
        case AwaitEvent() if isinstance(executor, EventDrivenActionExecutor):
            return ExecuteOutput(outputs=result.outputs, awaiting=result)
    raise PermanentError(
        f"{type(executor).__name__} returned {type(result).__name__}, which its kind of "
        "action cannot return"
    )
