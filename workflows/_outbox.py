"""Publishing an action's recorded transitions from workflow code.

The workflow's history is the outbox: a transition is recorded first, then published, and
the workflow does not end before Kafka acknowledged all of them.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy as TemporalRetryPolicy
from temporalio.exceptions import ActivityError, FailureError

from workflows import _cancellation as cancellation
from workflows._failures import SINGLE_ATTEMPT

with workflow.unsafe.imports_passed_through():
    from karma import names
    from karma.transitions import TransitionLog
    from karma.workflow_io import EmitInput, EmitOutput

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


class Outbox:
    def __init__(self, log: TransitionLog) -> None:
        self._log = log

    async def flush(self) -> None:
        """Return once Kafka acknowledged every recorded transition."""
        while pending := self._log.pending():
            try:
                out: EmitOutput = await workflow.execute_local_activity(
                    names.EMIT_TRANSITIONS,
                    EmitInput(events=pending),
                    result_type=EmitOutput,
                    start_to_close_timeout=FAST_EMIT_TIMEOUT,
                    retry_policy=SINGLE_ATTEMPT,
                )
            except FailureError as failure:
                cancellation.of_local_activity(failure)
                workflow.logger.warning("Kafka is slow or down; transitions wait in the outbox")
                out = await self._durable_emit()
            self._log.acknowledge(out.emitted_seq)

    async def _durable_emit(self) -> EmitOutput:
        """Emit through a regular activity retried until Kafka is back. A cancellation of
        the action surfaces as asyncio.CancelledError, as everywhere else, so the caller
        records CANCELLED (and flushes it) instead of failing the workflow."""
        try:
            out: EmitOutput = await workflow.execute_activity(
                names.EMIT_TRANSITIONS,
                EmitInput(events=self._log.pending()),
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
