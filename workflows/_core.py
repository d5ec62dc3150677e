"""What every part of ActionWorkflow shares: its state, how the action ends, attempts of an
executor call, recording transitions and keeping the search attributes current."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy as TemporalRetryPolicy
from temporalio.exceptions import ActivityError

from workflows._failures import classify
from workflows._outbox import Outbox

with workflow.unsafe.imports_passed_through():
    from karma import names, search_attributes
    from karma.decision import AwaitDecision, Decision
    from karma.errors import ErrorInfo, ErrorType
    from karma.events import Envelope, TransitionAttrs
    from karma.lifecycle import ActionState, EventType
    from karma.request import ActionRequest
    from karma.transitions import TransitionLog
    from karma.workflow_io import ExecuteInput, ExecuteOutput, ExecutionPlan, Phase

# Attempts are retried by the workflow, so each one is recorded as a transition.
SINGLE_ATTEMPT = TemporalRetryPolicy(maximum_attempts=1)


@dataclass
class Ending:
    """How the action ends: its terminal transition and what it carries."""

    event_type: EventType
    outputs: dict[str, Any] = field(default_factory=dict)
    error: ErrorInfo | None = None
    at: datetime | None = None  # replay-stable time, when workflow.now() is not
    reason: str = ""  # why the action was skipped


class ActionCore:
    """The state ActionWorkflow keeps (set in its `__init__`) and the helpers its parts
    (event waits, saga, approval, iterations) share."""

    _request: ActionRequest
    _log: TransitionLog
    _outbox: Outbox
    _attempt: int
    _outputs: dict[str, Any]
    _output_names: list[str]
    _error: ErrorInfo | None
    _external_id: str
    _inbox: list[Envelope]
    _seen_events: set[str]
    _question: AwaitDecision | None
    _decision: Decision | None
    _compensated: list[str]
    _indexed_state: ActionState
    _indexing: bool

    async def _work(self, params: dict[str, Any], plan: ExecutionPlan) -> Ending:
        """Run the executor (sync, event-driven, or interactive once approved)."""
        raise NotImplementedError

    async def _attempts(
        self,
        params: dict[str, Any],
        plan: ExecutionPlan,
        *,
        phase: Phase = Phase.EXECUTE,
        step: str = "",
        previous: dict[str, Any] | None = None,
        state: dict[str, Any] | None = None,
        state_version: int = 0,
    ) -> ExecuteOutput | Ending:
        """Attempts of one executor call under the action's retry policy; an ending if
        they all failed (with the outputs known so far)."""
        attempt = 1
        while True:
            self._attempt = attempt
            self._index_state()
            try:
                result: ExecuteOutput = await workflow.execute_activity(
                    names.EXECUTE_ACTION,
                    ExecuteInput(
                        request=self._request,
                        params=params,
                        attempt=attempt,
                        pending=self._log.pending(),
                        phase=phase,
                        step=step,
                        previous=previous or {},
                        decision=self._decision,
                        state=state,
                        state_version=state_version,
                    ),
                    result_type=ExecuteOutput,
                    start_to_close_timeout=plan.timeout,
                    heartbeat_timeout=plan.heartbeat_timeout,
                    retry_policy=SINGLE_ATTEMPT,
                    cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                )
            except ActivityError as err:
                error, emitted = classify(err)
                self._log.acknowledge(emitted)
            else:
                self._log.acknowledge(result.emitted_seq)
                self._error = None
                return result
            self._error = error
            if self._cancel_requested() or error.type is ErrorType.CANCELLED:
                # It came while the attempt failed anyway (do not retry), or the attempt
                # stopped for it and said what Kafka had acknowledged.
                raise asyncio.CancelledError
            if not error.retryable or attempt >= plan.retry.max_attempts:
                return Ending(EventType.FAILED, outputs=dict(previous or {}), error=error)
            delay = (
                timedelta(seconds=error.retry_after_s)
                if error.retry_after_s is not None
                else plan.retry.delay_after(attempt)
            )
            self._record(
                EventType.RETRYING,
                TransitionAttrs(
                    attempt=attempt, error=error, retry_in_ms=millis(delay), step=step or None
                ),
            )
            self._index_state()
            await asyncio.gather(self._outbox.flush(), workflow.sleep(delay))
            attempt += 1

    def _record(
        self, event_type: EventType, attrs: TransitionAttrs, *, at: datetime | None = None
    ) -> None:
        self._log.record(event_type, at or workflow.now(), attrs)

    def _index_state(self) -> None:
        """Keep KarmaState (and KarmaExternalId) current, once per workflow task."""
        state = self._log.state
        if not self._indexing or state is self._indexed_state:
            return
        updates = [search_attributes.STATE.value_set(state.value)]
        if state is ActionState.WAITING:
            updates.append(search_attributes.EXTERNAL_ID.value_set(self._external_id))
        workflow.upsert_search_attributes(updates)
        self._indexed_state = state

    def _cancel_requested(self) -> bool:
        """Whether a cancellation was requested, even one that an activity finishing
        successfully absorbed (it stays requested on the workflow's task; replay-safe, as
        the request is in the history)."""
        task = asyncio.current_task()
        return task is not None and task.cancelling() > 0

    def _cancelled(self, outputs: dict[str, Any]) -> Ending:
        error = ErrorInfo(type=ErrorType.CANCELLED, message="cancelled on request")
        return Ending(EventType.CANCELLED, outputs=outputs, error=error)


def millis(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)
