"""Interactive actions: `ask`, WAITING for a person's decision (the `decide` update) or the
timeout policy, DECIDED, then the work once approved."""

from __future__ import annotations

from datetime import datetime

from temporalio import workflow

from workflows import _calls as calls
from workflows import _cancellation as cancellation
from workflows import _execute as execute
from workflows._context import RunContext
from workflows._ending import Ending, millis
from workflows._failures import internal

with workflow.unsafe.imports_passed_through():
    from karma.envelope import TransitionAttrs
    from karma.errors import ErrorInfo, ErrorType
    from karma.interactive import AwaitDecision, Decision, TimeoutPolicy, Verdict
    from karma.lifecycle import EventType
    from karma.meta import ExecutionMode


MODES = (ExecutionMode.INTERACTIVE,)


async def run(ctx: RunContext) -> Ending:
    """Ask, wait for the decision (or apply the timeout policy), then do the work."""
    asked = await ctx.attempts(calls.ask())
    if isinstance(asked, Ending):
        return asked
    ctx.run.outputs = dict(asked.outputs)
    cancellation.checkpoint()  # it came while the question was being prepared
    at = await ctx.stable_time(asked.finished_at)
    if asked.skipped is not None:
        return Ending(EventType.SKIPPED, outputs=asked.outputs, reason=asked.skipped, at=at)
    question = asked.asking
    if question is None:
        return Ending(EventType.FAILED, error=internal("ask returned no question"), at=at)
    ctx.run.question = question
    ctx.run.outputs = dict(question.outputs)
    ctx.record(
        EventType.WAITING,
        TransitionAttrs(
            decision_request=question.request,
            timeout_ms=millis(question.timeout),
            outputs=ctx.run.outputs,
            message=f"on timeout: {question.on_timeout.value}",
        ),
        at,
    )
    ctx.index()
    await ctx.outbox.flush()
    decision, deadline = await _decision_or_policy(ctx, question, at)
    if decision is None:
        error = ErrorInfo(
            type=ErrorType.TIMEOUT,
            message="no decision, even after escalation, within "
            f"{2 * question.timeout.total_seconds():g}s",
        )
        return Ending(EventType.TIMED_OUT, outputs=ctx.run.outputs, error=error, at=deadline)
    ctx.run.decision = decision
    at = await ctx.stable_time(decision.at if decision.automatic else None)
    ctx.record(EventType.DECIDED, TransitionAttrs(decision=decision.model_dump(mode="json")), at)
    if not decision.approved:
        error = ErrorInfo(
            type=ErrorType.REJECTED, message=f"rejected by {decision.by}: {decision.reason}"
        )
        return Ending(EventType.FAILED, outputs=ctx.run.outputs, error=error, at=at)
    ctx.record(EventType.STARTED, TransitionAttrs(attempt=1), at)
    return await execute.work(ctx)


async def _decision_or_policy(
    ctx: RunContext, question: AwaitDecision, asked_at: datetime
) -> tuple[Decision | None, datetime]:
    """The person's decision, or the timeout policy's (None if escalation went unanswered
    too), and the last deadline (counted from WAITING's own time: after the flush's local
    activity the clock is not stable)."""
    timeout = question.timeout
    rounds = 2 if question.on_timeout is TimeoutPolicy.ESCALATE else 1
    deadline = asked_at
    for round_ in range(rounds):
        deadline = (deadline if ctx.core_2 else workflow.now()) + timeout
        decided = await ctx.wait_until(lambda: ctx.run.decision is not None, deadline)
        if decided or ctx.run.decision is not None:  # or accepted in the same activation
            return ctx.run.decision, deadline
        if round_ + 1 < rounds:
            seconds = timeout.total_seconds()
            ctx.record(
                EventType.ESCALATED,
                TransitionAttrs(
                    decision_request=question.request,
                    message=f"no decision within {seconds:g}s; escalated, waiting "
                    f"{seconds:g}s more",
                ),
                deadline,
            )
            await ctx.outbox.flush()
    if question.on_timeout is TimeoutPolicy.ESCALATE:
        return None, deadline
    decision = Decision(
        verdict=Verdict(question.on_timeout.value),
        by="timeout policy",
        reason=f"no decision within {timeout.total_seconds():g}s",
        at=deadline,
        automatic=True,
    )
    return decision, deadline
