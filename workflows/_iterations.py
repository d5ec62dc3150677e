"""Stateful actions: iterations with durable state and progress, continuing as new every
`iterations_per_run` iterations so the history stays small."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from workflows import _calls as calls
from workflows import _cancellation as cancellation
from workflows._context import RunContext
from workflows._ending import Ending

with workflow.unsafe.imports_passed_through():
    from karma.envelope import TransitionAttrs
    from karma.large_state import PACKED_ITERATIONS_PER_RUN, is_packed
    from karma.lifecycle import EventType
    from karma.meta import ExecutionMode


# Streaming actions are stateful ones whose state is where their stream stands.
MODES = (ExecutionMode.STATEFUL, ExecutionMode.STREAMING)


async def run(ctx: RunContext) -> Ending:
    """Iterate until Break, recording progress; continue as new every
    `iterations_per_run` iterations with the whole state."""
    run_state = ctx.run
    if ctx.request.resume is None:
        ctx.record(EventType.STARTED, TransitionAttrs(attempt=1), ctx.prepared_at)
    per_run = ctx.execution.iterations_per_run
    for done_here in range(1, per_run + 1):
        first = run_state.iterations == 0
        result = await ctx.attempts(
            calls.iterate(
                None if first else run_state.data, 0 if first else run_state.data_version
            ),
            keep=run_state.outputs,
        )
        if isinstance(result, Ending):
            return result
        run_state.iterations += 1
        run_state.outputs.update(result.outputs)
        at = await ctx.stable_time(result.finished_at)
        iteration = result.iteration
        if iteration is None or iteration.done:
            return Ending(EventType.SUCCEEDED, outputs=run_state.outputs, at=at)
        cancellation.checkpoint()  # it came while the iteration finished anyway
        run_state.data, run_state.data_version = iteration.state, iteration.state_version
        ctx.record(
            EventType.PROGRESS,
            TransitionAttrs(
                percent=iteration.progress,
                message=iteration.message or f"iteration {run_state.iterations}",
                iteration=run_state.iterations,
            ),
            at,
        )
        if iteration.delay > timedelta(0):
            await ctx.outbox.flush_while_sleeping(iteration.delay)
        if is_packed(run_state.data) and done_here >= PACKED_ITERATIONS_PER_RUN:
            break  # a large state: fewer copies of it in one history
    # Bound the history: the next run starts from here with nothing to replay.
    await ctx.outbox.flush()
    run_state.started_at = run_state.started_at or workflow.info().workflow_start_time
    workflow.continue_as_new(
        # The params prepared first (references resolved, templates rendered, secrets
        # sealed): the next run takes them as they are.
        ctx.request.model_copy(
            update={
                "resume": run_state.continued(),
                "params": ctx.params,
                "params_prepared": True,
                "template_context": None,  # read once, by the first run
            }
        ),
        search_attributes=workflow.info().typed_search_attributes,
    )
