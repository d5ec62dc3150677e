"""One function per executor method: call it, check what it may return, say it as the
method's typed output."""

from __future__ import annotations

from karma import large_state
from karma.errors import PermanentError
from karma.executor import (
    ActionContext,
    ActionResult,
    AwaitCallback,
    BaseActionExecutor,
    EventDrivenActionExecutor,
    Skip,
)
from karma.interactive import AwaitDecision, InteractiveActionExecutor
from karma.saga import StepContext, StepResult, TransactionalActionExecutor
from karma.settings import LimitsSettings
from karma.stateful import Break, Continue, StatefulActionExecutor
from karma.workflow_io import (
    AskOutput,
    ExecuteOutput,
    IterateInput,
    IterateOutput,
    Iteration,
    StepOutput,
)


def _refused(executor: BaseActionExecutor, returned: object) -> PermanentError:
    return PermanentError(
        f"{type(executor).__name__} returned {type(returned).__name__}, which its kind of "
        "action cannot return"
    )


def _not_a(executor: BaseActionExecutor, kind: str) -> PermanentError:
    return PermanentError(f"{type(executor).__name__} is not a {kind}")


async def execute(executor: BaseActionExecutor, ctx: ActionContext) -> ExecuteOutput:
    result = await executor.execute(ctx)
    match result:
        case ActionResult():
            return ExecuteOutput(outputs=result.outputs)
        case Skip():
            return ExecuteOutput(outputs=result.outputs, skipped=result.reason)
        case AwaitCallback() if isinstance(executor, EventDrivenActionExecutor):
            return ExecuteOutput(outputs=result.outputs, awaiting=result)
    raise _refused(executor, result)


async def ask(executor: BaseActionExecutor, ctx: ActionContext) -> AskOutput:
    if not isinstance(executor, InteractiveActionExecutor):
        raise _not_a(executor, "InteractiveActionExecutor")
    result = await executor.ask(ctx)
    match result:
        case AwaitDecision():
            return AskOutput(outputs=result.outputs, asking=result)
        case Skip():
            return AskOutput(outputs=result.outputs, skipped=result.reason)
    raise _refused(executor, result)


async def run_step(executor: BaseActionExecutor, ctx: StepContext) -> StepOutput:
    if not isinstance(executor, TransactionalActionExecutor):
        raise _not_a(executor, "TransactionalActionExecutor")
    result = await executor.run_step(ctx)
    match result:
        case StepResult():
            return StepOutput(outputs=result.outputs, compensation=result.compensation)
        case Skip():
            return StepOutput(outputs=result.outputs, skipped=result.reason)
    raise _refused(executor, result)


async def iterate(
    executor: BaseActionExecutor, ctx: ActionContext, inp: IterateInput, limits: LimitsSettings
) -> IterateOutput:
    """One iteration; the state is unpacked before and packed after (`karma.large_state`)."""
    if not isinstance(executor, StatefulActionExecutor):
        raise _not_a(executor, "StatefulActionExecutor")
    stateful = executor
    if inp.state is None:
        state = stateful.initial_state(ctx)
    elif inp.state_version != stateful.state_version:
        state = stateful.migrate_state(large_state.unpack(dict(inp.state)), inp.state_version)
    else:
        state = large_state.unpack(dict(inp.state))
    result = await stateful.execute_with_state(ctx, state)
    match result:
        case Continue():
            iteration = Iteration(
                done=False,
                state=large_state.pack(
                    result.state,
                    compress_past=limits.state_compress_bytes,
                    limit=limits.max_state_bytes,
                ),
                state_version=stateful.state_version,
                progress=result.progress,
                message=result.message,
                delay=result.delay,
            )
            return IterateOutput(outputs=result.outputs, iteration=iteration)
        case Break():
            done = Iteration(done=True, state_version=stateful.state_version)
            return IterateOutput(outputs=result.outputs, iteration=done)
    raise _refused(executor, result)
