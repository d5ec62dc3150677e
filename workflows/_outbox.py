"""Publishing an action's recorded transitions from workflow code.

The workflow's history is the outbox: a transition is recorded first, then published, and
the workflow does not end before Kafka acknowledged all of them.

Only transitions of a committed workflow task are published. A task that is lost (its
worker dies) or refused (a cancellation or a signal arrived while it ran, and it would
have ended the workflow) runs again with those events in the same activation, and may
then record another transition under the same seq; had the first one been published, the
ledger would keep it and never the one the history says. So a local activity publishes
only transitions of earlier, committed tasks; those of the running task are published by a
regular activity, whose input is committed with the command that schedules it (a worker
polling the task queue runs it at once: eager activity execution).

An emit is never cancelled half way (contract 4): Kafka may have acknowledged a batch whose
activity a cancellation then abandoned, and the batch, still pending, would be published
again with CANCELLED. A cancellation arriving during a flush is raised once Kafka
acknowledged everything pending.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy as TemporalRetryPolicy
from temporalio.exceptions import ActivityError, FailureError

from workflows import _cancellation as cancellation
from workflows._failures import SINGLE_ATTEMPT

with workflow.unsafe.imports_passed_through():
    from karma import names
    from karma.envelope import Transition
    from karma.transitions import TransitionLog
    from karma.workflow_io import EmitInput, EmitOutput

# Long enough that the workflow task taking it is committed before it fires.
COMMIT_DELAY = timedelta(milliseconds=1)
# A local activity first (no extra server round trip); if Kafka does not acknowledge in
# time, a regular activity retried until Kafka is back.
FAST_EMIT_TIMEOUT = timedelta(seconds=15)
DURABLE_EMIT_TIMEOUT = timedelta(minutes=1)
DURABLE_EMIT_RETRY = TemporalRetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
)


# An activity's input goes into the history: a batch of transitions with large outputs is
# sent in parts, each well under Temporal's 2 MB limit on a payload.
EMIT_BATCH_BYTES = 1 << 20


def bounded(events: list[Transition]) -> list[Transition]:
    """The first of `events` that fit in EMIT_BATCH_BYTES together (at least one)."""
    size = 0
    for count, event in enumerate(events):
        size += len(event.model_dump_json())
        if size > EMIT_BATCH_BYTES and count > 0:
            return events[:count]
    return events


async def commit() -> None:
    """Let the running workflow task be committed before going on."""
    await workflow.sleep(COMMIT_DELAY)


class Outbox:
    def __init__(
        self, log: TransitionLog, *, commit_first: bool = False, emit_whole: bool = False
    ) -> None:
        self._log = log
        # Requests made for contract 3 (commit first) and 4 (emits never cancelled) on:
        # runs of older ones keep the commands they were recorded with.
        self._commit_first = commit_first
        self._emit_whole = emit_whole
        # The workflow task (by the history's length when it started) of the last
        # recording: the last recorded transition is the last pending one, so whether it
        # belongs to the running task says whether any pending one does.
        self._task = -1

    def recorded(self, transition: Transition) -> None:
        """Note a transition just recorded (every recording goes through here).

        Replay gives the same lengths as long as a recording is followed, in the same
        activation, by a command (an emit, an attempt, a timer, an upsert): never record
        and then wait on a local activity before flushing.
        """
        self._task = workflow.info().get_current_history_length()

    def _uncommitted(self) -> bool:
        """Whether the pending transitions include some the running task recorded."""
        return self._commit_first and self._task == workflow.info().get_current_history_length()

    async def flush(self) -> None:
        """Return once Kafka acknowledged every recorded transition."""
        cancelled = False
        while self._log.pending():
            if self._emit_whole:
                out, interrupted = await cancellation.absorbing(self._emit())
                cancelled = cancelled or interrupted
            else:
                out = await self._emit()
            self._log.acknowledge(out.emitted_seq)
        if cancelled:
            raise asyncio.CancelledError

    async def flush_while_sleeping(self, delay: timedelta) -> None:
        """Flush while `delay` passes (a backoff, an iteration's pause); return when both
        are done."""
        if not self._emit_whole:
            await asyncio.gather(self.flush(), workflow.sleep(delay))
            return
        # Not gather: a cancelled timer would end it at once, leaving the flush running on
        # beside the one that publishes CANCELLED.
        timer = asyncio.ensure_future(workflow.sleep(delay))
        try:
            await self.flush()
            await timer
        finally:
            timer.cancel()

    async def _emit(self) -> EmitOutput:
        """Publish the first pending transitions; what Kafka acknowledged."""
        if self._uncommitted():
            # An activity's input is committed with the task that schedules it.
            return await self._durable_emit()
        try:
            out: EmitOutput = await workflow.execute_local_activity(
                names.EMIT_TRANSITIONS,
                EmitInput(events=self._log.pending()),
                result_type=EmitOutput,
                start_to_close_timeout=FAST_EMIT_TIMEOUT,
                retry_policy=SINGLE_ATTEMPT,
            )
        except FailureError as failure:
            cancellation.of_local_activity(failure)
            workflow.logger.warning("Kafka is slow or down; transitions wait in the outbox")
            return await self._durable_emit()
        return out

    async def _durable_emit(self) -> EmitOutput:
        """Emit through a regular activity retried until Kafka is back. Before contract 4 a
        cancellation of the action cancels it and surfaces as asyncio.CancelledError, as
        everywhere else, so the caller records CANCELLED (and flushes it) instead of
        failing the workflow; from contract 4 `flush` waits for it first."""
        try:
            out: EmitOutput = await workflow.execute_activity(
                names.EMIT_TRANSITIONS,
                EmitInput(events=bounded(self._log.pending())),
                result_type=EmitOutput,
                start_to_close_timeout=DURABLE_EMIT_TIMEOUT,
                retry_policy=DURABLE_EMIT_RETRY,
            )
        except ActivityError as err:
            cancellation.of_activity(err)
            raise
        return out

    async def flush_to_the_end(self) -> None:
        """Flush even if a cancellation arrives now: the action has already ended."""
        await cancellation.to_the_end(self.flush)
