"""Transactional actions: steps in order; when one fails for good, or the action is
cancelled, the completed steps are compensated in reverse, and neither a cancellation nor
a lost worker interrupts that rollback."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows import _calls as calls
from workflows import _cancellation as cancellation
from workflows._context import RunContext
from workflows._ending import Ending
from workflows._failures import classify, temporal_retry
from workflows._outbox import DURABLE_EMIT_RETRY

with workflow.unsafe.imports_passed_through():
    from karma import names
    from karma.envelope import TransitionAttrs
    from karma.errors import ErrorInfo, ErrorType
    from karma.lifecycle import EventType
    from karma.meta import ExecutionMode
    from karma.status import Undo, UndoStep
    from karma.workflow_io import CompensateInput, CompensationDone, UndoneReport, UndoneStep

ROLLED_BACK = (EventType.FAILED, EventType.CANCELLED)


MODES = (ExecutionMode.TRANSACTIONAL,)


async def run(ctx: RunContext) -> Ending:
    """STARTED, the steps, and the rollback when they do not all complete."""
    ctx.record(EventType.STARTED, TransitionAttrs(attempt=1), ctx.prepared_at)
    done: list[UndoneStep] = []
    ending = await cancellation.interruptible(_steps(ctx, done))
    if ending is None:
        ending = cancellation.ending(ctx.run.outputs)
    if ending.event_type in ROLLED_BACK:
        # The rollback, every wait in it included, is not itself cancellable.
        return await cancellation.uncancellable(_compensate(ctx, done, ending))
    return ending


async def _steps(ctx: RunContext, done: list[UndoneStep]) -> Ending:
    steps = ctx.execution.steps
    outputs = ctx.run.outputs
    at: datetime | None = None
    for index, step in enumerate(steps):
        result = await ctx.attempts(calls.run_step(step, dict(outputs)), keep=outputs)
        if isinstance(result, Ending):
            return result
        at = await ctx.stable_time(result.finished_at)
        outputs.update(result.outputs)
        if result.skipped is not None:
            return Ending(EventType.SKIPPED, outputs=outputs, reason=result.skipped, at=at)
        done.append(UndoneStep(step=step, compensation=result.compensation))
        ctx.record(
            EventType.PROGRESS,
            TransitionAttrs(
                step=step,
                percent=round(100 * (index + 1) / len(steps), 1),
                message=f"step {step} done",
            ),
            at,
        )
        if index + 1 < len(steps):
            # It came while this step finished anyway: start no further step.
            cancellation.checkpoint()
    plan = ctx.execution
    undo = Undo(
        params=ctx.params,
        steps=[UndoStep(step=d.step, compensation=d.compensation) for d in done],
        timeout_s=plan.timeout.total_seconds(),
        heartbeat_timeout_s=plan.heartbeat_timeout.total_seconds(),
        retry=plan.compensation_retry or plan.retry,
    )
    return Ending(EventType.SUCCEEDED, outputs=outputs, at=at, undo=undo)


async def _compensate(ctx: RunContext, done: list[UndoneStep], ending: Ending) -> Ending:
    """Undo `done` in reverse; the rollback itself is not cancellable."""
    if not done:
        return ending
    at = await ctx.stable_time(ending.at)
    ctx.record(
        EventType.COMPENSATING,
        TransitionAttrs(error=ending.error, message=f"undoing {len(done)} step(s)"),
        at,
    )
    ctx.index()
    for index in reversed(range(len(done))):
        step = done[index]
        failure, at = await _compensate_step(ctx, step, ending.error)
        ctx.record(
            EventType.STEP_COMPENSATED,
            TransitionAttrs(
                step=step.step, outcome="failed" if failure else "compensated", error=failure
            ),
            at,
        )
        if failure is None:
            ctx.run.compensated.append(step.step)
            continue
        undone = done[: index + 1]
        cause = ending.error.message if ending.error else ending.event_type.value
        error = ErrorInfo(
            type=ErrorType.COMPENSATION_FAILED,
            message=f"compensating {step.step} failed ({failure.message}); "
            f"not undone: {', '.join(u.step for u in undone)}; the rollback was for: {cause}",
        )
        await _report_undone(ctx, undone, error)
        return Ending(EventType.FAILED, outputs=ending.outputs, error=error, at=at)
    ctx.record(EventType.COMPENSATED, TransitionAttrs(message=f"{len(done)} step(s) undone"), at)
    return dataclasses.replace(ending, at=at)


async def _compensate_step(
    ctx: RunContext, step: UndoneStep, cause: ErrorInfo | None
) -> tuple[ErrorInfo | None, datetime]:
    """One compensation, retried by Temporal under its policy: its error if it failed for
    good, and when it ended."""
    plan = ctx.execution
    running = workflow.start_activity(
        names.COMPENSATE_STEP,
        CompensateInput(
            request=ctx.request,
            params=ctx.params,
            step=step.step,
            compensation=step.compensation,
            cause=cause,
        ),
        start_to_close_timeout=plan.timeout,
        heartbeat_timeout=plan.heartbeat_timeout,
        retry_policy=temporal_retry(plan.compensation_retry or plan.retry),
    )
    try:
        # Histories recorded before compensate_step said when it finished hold None.
        raw = await cancellation.uncancellable(running)
    except ActivityError as err:
        failure = classify(err)
        return failure.error, await ctx.stable_time(failure.failed_at)
    finished = CompensationDone.model_validate(raw) if raw else CompensationDone()
    return None, await ctx.stable_time(finished.finished_at)


async def _report_undone(ctx: RunContext, undone: list[UndoneStep], error: ErrorInfo) -> None:
    report = UndoneReport(
        action_id=ctx.request.action_id,
        action_type=ctx.request.action_type,
        reason=error.message,
        error=error,
        undone=undone,
    )
    running = workflow.start_activity(
        names.REPORT_UNDONE,
        report,
        start_to_close_timeout=timedelta(minutes=1),
        retry_policy=DURABLE_EMIT_RETRY,
    )
    await cancellation.uncancellable(running)
