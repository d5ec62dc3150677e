"""Sync and event-driven actions (and interactive ones once approved): attempts of
`execute`; a hand-off to another system waits for its callbacks."""

from __future__ import annotations

from temporalio import workflow

from workflows import _callbacks as callbacks
from workflows import _calls as calls
from workflows import _cancellation as cancellation
from workflows._context import RunContext
from workflows._ending import Ending

with workflow.unsafe.imports_passed_through():
    from karma.envelope import TransitionAttrs
    from karma.lifecycle import EventType
    from karma.meta import ExecutionMode


MODES = (
    ExecutionMode.SYNC,
    ExecutionMode.EVENT_DRIVEN,
)


async def run(ctx: RunContext) -> Ending:
    """STARTED, then the work."""
    ctx.record(EventType.STARTED, TransitionAttrs(attempt=1), ctx.prepared_at)
    return await work(ctx)


async def work(ctx: RunContext) -> Ending:
    """Attempts of `execute` until one succeeds, skips, or hands the work off."""
    done = await ctx.attempts(calls.execute(ctx.run.decision))
    if isinstance(done, Ending):
        return done
    at = await ctx.stable_time(done.finished_at)
    if done.skipped is not None:
        return Ending(EventType.SKIPPED, outputs=done.outputs, reason=done.skipped, at=at)
    if done.awaiting is None:
        return Ending(EventType.SUCCEEDED, outputs={**ctx.run.outputs, **done.outputs}, at=at)
    ctx.run.outputs = dict(done.awaiting.outputs)
    cancellation.checkpoint()  # it came while the executor handed the work off
    return await callbacks.wait(ctx, done.awaiting, at)
