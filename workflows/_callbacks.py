"""Event-driven actions once the work is handed off: WAITING for callbacks (buffered
signals), each judged by the executor's `on_callback`, until one ends the action or the
timeout does (TIMED_OUT)."""

from __future__ import annotations

from datetime import datetime

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows import _cancellation as cancellation
from workflows._context import RunContext
from workflows._ending import Ending, millis
from workflows._failures import classify, temporal_retry

with workflow.unsafe.imports_passed_through():
    from karma import names
    from karma.envelope import Envelope, TransitionAttrs
    from karma.errors import ErrorInfo, ErrorType
    from karma.executor import AwaitCallback, CallbackDecision
    from karma.lifecycle import EventType
    from karma.workflow_io import CallbackInput, JudgedCallback


async def wait(ctx: RunContext, awaiting: AwaitCallback, at: datetime) -> Ending:
    """WAITING (recorded at `at`) until a callback ends the action or the timeout does."""
    waiting = ctx.run.callbacks
    waiting.external_id = awaiting.external_workflow_id
    outputs = ctx.run.outputs
    ctx.record(
        EventType.WAITING,
        TransitionAttrs(
            external_workflow_id=waiting.external_id,
            timeout_ms=millis(awaiting.timeout),
            outputs=dict(outputs),
        ),
        at,
    )
    ctx.index()
    # From WAITING's own time: after the flush's local activity the clock is not stable.
    deadline = (at if ctx.core_2 else workflow.now()) + awaiting.timeout
    await ctx.outbox.flush()  # the wait may be long: make WAITING visible now
    while True:
        if not waiting.inbox and not await ctx.wait_until(lambda: bool(waiting.inbox), deadline):
            error = ErrorInfo(
                type=ErrorType.TIMEOUT,
                message=f"no completion for {waiting.external_id} within "
                f"{awaiting.timeout.total_seconds():g}s",
            )
            return Ending(EventType.TIMED_OUT, outputs=outputs, error=error, at=deadline)
        callback = waiting.inbox.pop(0)
        judged = await _judge(ctx, callback)
        if judged is not None:
            return judged
        cancellation.checkpoint()  # it came while the callback was being judged


async def _judge(ctx: RunContext, callback: Envelope) -> Ending | None:
    """Let the executor judge one callback; an ending if it ends the action."""
    plan = ctx.execution
    outputs = ctx.run.outputs
    try:
        result: JudgedCallback = await workflow.execute_activity(
            names.HANDLE_CALLBACK if ctx.core_2 else names.HANDLE_EVENT,
            CallbackInput(
                request=ctx.request,
                params=ctx.params,
                external_workflow_id=ctx.run.callbacks.external_id,
                event=callback,
                outputs=outputs,
            ),
            result_type=JudgedCallback,
            start_to_close_timeout=plan.timeout,
            retry_policy=temporal_retry(plan.retry),
        )
    except ActivityError as err:
        failure = classify(err)
        if failure.error.type is ErrorType.PAYLOAD_TOO_LARGE:
            # The executor's answer cannot enter the history: no later callback can be
            # judged differently, so the action fails with the reason.
            at = await ctx.stable_time(failure.failed_at)
            return Ending(EventType.FAILED, outputs=outputs, error=failure.error, at=at)
        # A callback the executor cannot judge (malformed, from outside) must not end a
        # healthy action: it is ignored and the action keeps waiting.
        workflow.logger.warning(
            "ignored event %s: on_callback failed: %s", callback.event_id, failure.error.message
        )
        return None
    at = await ctx.stable_time(result.judged_at)
    match result.decision:
        case CallbackDecision.COMPLETE:
            outputs.update(result.outputs)
            if result.succeeded:
                return Ending(EventType.SUCCEEDED, outputs=outputs, at=at)
            error = ErrorInfo(type=ErrorType.EXTERNAL, message=result.error or callback.event_type)
            return Ending(EventType.FAILED, outputs=outputs, error=error, at=at)
        case CallbackDecision.UPDATE_PROGRESS:
            ctx.record(
                EventType.PROGRESS,
                TransitionAttrs(
                    percent=result.percent, message=result.message, event_id=callback.event_id
                ),
                at,
            )
            await ctx.outbox.flush()
        case CallbackDecision.IGNORE:
            workflow.logger.info("ignored event %s: %s", callback.event_id, result.message)
    return None
