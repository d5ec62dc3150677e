"""ActionWorkflow: one durable action, from request to terminal state."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any, NoReturn

from temporalio import workflow
from temporalio.common import RetryPolicy as TemporalRetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    FailureError,
    TimeoutError,
    TimeoutType,
)

with workflow.unsafe.imports_passed_through():
    from karma import names, search_attributes
    from karma.errors import ErrorInfo, ErrorType
    from karma.events import TransitionAttrs
    from karma.lifecycle import ActionState, EventType
    from karma.params import redact_params
    from karma.request import ActionRequest
    from karma.status import ActionOutcome, ActionStatus
    from karma.transitions import TransitionLog
    from karma.workflow_io import (
        EmitInput,
        EmitOutput,
        ExecuteFailure,
        ExecuteHeartbeat,
        ExecuteInput,
        ExecuteOutput,
        ExecutionPlan,
        PreparedAction,
    )

PREPARE_TIMEOUT = timedelta(seconds=30)
# Emission first runs as a local activity (no extra server round trip); if Kafka does not
# acknowledge in time it falls back to a regular activity retried until Kafka is back.
FAST_EMIT_TIMEOUT = timedelta(seconds=15)
DURABLE_EMIT_TIMEOUT = timedelta(minutes=1)
DURABLE_EMIT_RETRY = TemporalRetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
)
# Attempts are retried by the workflow, so each one is recorded as a transition.
SINGLE_ATTEMPT = TemporalRetryPolicy(maximum_attempts=1)


class _ActionFailed(Exception):
    def __init__(self, error: ErrorInfo, *, at: datetime | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.at = at


@workflow.defn(name=names.ACTION_WORKFLOW)
class ActionWorkflow:
    """Runs one Karma action and mirrors every transition to Kafka.

    Process: `prepare_action` (a local activity) validates the request against the worker's
    registry; the workflow records REQUESTED, then FAILED(validation) or ACCEPTED and STARTED.
    Each attempt is one `execute_action` activity (which also publishes the transitions
    recorded so far); a failed attempt that will be retried is recorded as RETRYING and the
    workflow waits out the backoff (or the error's `retry_after`). The terminal transition
    follows, and the workflow ends only after Kafka acknowledged every transition
    (`emit_transitions`, local first, then durable with unlimited retries).

    Queries: `status` (state, attempt, outputs, error, transitions).
    Signals and updates: none yet.
    Cancellation: the running attempt is cancelled, CANCELLED is recorded and the workflow
    ends cancelled. Compensation: none (sync actions have nothing to undo).
    Result: an ActionOutcome on success; on failure an ApplicationError whose type is the
    error type and whose first detail is the ActionOutcome.
    """

    @workflow.init
    def __init__(self, request: ActionRequest) -> None:
        self._request = request
        self._log = TransitionLog(request)
        self._requested_args: dict[str, Any] | None = None
        self._attempt = 0
        self._outputs: dict[str, Any] = {}
        self._error: ErrorInfo | None = None
        self._indexed_state = ActionState.REQUESTED
        # Started without Karma's search attributes (a namespace without them): leave them be.
        self._indexing = (
            workflow.info().typed_search_attributes.get(search_attributes.STATE) is not None
        )

    @workflow.query(name=names.STATUS_QUERY)
    def status(self) -> ActionStatus:
        return ActionStatus(
            action_id=self._request.action_id,
            action_type=self._request.action_type,
            state=self._log.state,
            attempt=self._attempt,
            outputs=self._outputs,
            error=self._error,
            transitions=self._log.events,
            emitted_seq=self._log.emitted_seq,
        )

    @workflow.run
    async def run(self, request: ActionRequest) -> ActionOutcome:
        try:
            outputs = await self._run()
        except _ActionFailed as failed:
            return await self._finish(EventType.FAILED, error=failed.error, at=failed.at)
        except asyncio.CancelledError:
            cancelled = ErrorInfo(type=ErrorType.CANCELLED, message="cancelled on request")
            return await self._finish(EventType.CANCELLED, error=cancelled)
        return await self._finish(EventType.SUCCEEDED, outputs=outputs)

    async def _run(self) -> dict[str, Any]:
        prepared: PreparedAction = await workflow.execute_local_activity(
            names.PREPARE_ACTION,
            self._request,
            result_type=PreparedAction,
            start_to_close_timeout=PREPARE_TIMEOUT,
        )
        self._record_requested(prepared.requested_args)
        # Right after a local activity workflow.now() is not replay-stable; its result is.
        at = prepared.prepared_at
        if prepared.error is not None or prepared.plan is None:
            error = prepared.error or _internal("prepare_action returned no plan")
            raise _ActionFailed(error, at=at)
        self._record(
            EventType.ACCEPTED,
            TransitionAttrs(command=self._request.action_type, args=prepared.accepted_args),
            at=at,
        )
        self._record(EventType.STARTED, TransitionAttrs(attempt=1), at=at)
        outputs = await self._attempts(prepared.params, prepared.plan)
        return {**dict.fromkeys(prepared.plan.output_names), **outputs}

    async def _attempts(self, params: dict[str, Any], plan: ExecutionPlan) -> dict[str, Any]:
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
                    ),
                    result_type=ExecuteOutput,
                    start_to_close_timeout=plan.timeout,
                    heartbeat_timeout=plan.heartbeat_timeout,
                    retry_policy=SINGLE_ATTEMPT,
                    cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                )
            except ActivityError as err:
                error = self._attempt_failed(err)
            else:
                self._log.acknowledge(result.emitted_seq)
                self._error = None
                return result.outputs
            self._error = error
            if not error.retryable or attempt >= plan.retry.max_attempts:
                raise _ActionFailed(error)
            delay = (
                timedelta(seconds=error.retry_after_s)
                if error.retry_after_s is not None
                else plan.retry.delay_after(attempt)
            )
            self._record(
                EventType.RETRYING,
                TransitionAttrs(attempt=attempt, error=error, retry_in_ms=_millis(delay)),
            )
            self._index_state()
            await asyncio.gather(self._flush(), workflow.sleep(delay))
            attempt += 1

    def _attempt_failed(self, err: ActivityError) -> ErrorInfo:
        cause = err.cause
        if isinstance(cause, CancelledError):
            raise asyncio.CancelledError from err
        if isinstance(cause, ApplicationError) and cause.details:
            failure = ExecuteFailure.model_validate(cause.details[0])
            self._log.acknowledge(failure.emitted_seq)
            return failure.error
        if isinstance(cause, TimeoutError):
            if cause.last_heartbeat_details:
                beat = ExecuteHeartbeat.model_validate(cause.last_heartbeat_details[0])
                self._log.acknowledge(beat.emitted_seq)
            heartbeat = cause.type is TimeoutType.HEARTBEAT
            return ErrorInfo(
                type=ErrorType.HEARTBEAT_TIMEOUT if heartbeat else ErrorType.TIMEOUT,
                message=(
                    "the worker stopped heartbeating (lost or stuck)"
                    if heartbeat
                    else "the attempt ran longer than the action's timeout"
                ),
                retryable=True,
            )
        if isinstance(cause, ApplicationError):
            return ErrorInfo(
                type=ErrorType.INTERNAL,
                message=cause.message,
                code=cause.type or "",
                retryable=not cause.non_retryable,
            )
        return ErrorInfo(type=ErrorType.INTERNAL, message=str(cause or err), retryable=True)

    async def _finish(
        self,
        event_type: EventType,
        *,
        outputs: dict[str, Any] | None = None,
        error: ErrorInfo | None = None,
        at: datetime | None = None,
    ) -> ActionOutcome:
        self._record_requested(None)
        self._outputs = outputs or {}
        self._error = error
        at = at or workflow.now()
        duration_ms = _millis(at - workflow.info().workflow_start_time)
        self._record(
            event_type,
            TransitionAttrs(
                attempt=self._attempt or None,
                outputs=self._outputs,
                error=error,
                duration_ms=duration_ms,
            ),
            at=at,
        )
        self._index_state()
        await self._flush_to_the_end()
        await workflow.wait_condition(workflow.all_handlers_finished)
        outcome = ActionOutcome(
            action_id=self._request.action_id,
            action_type=self._request.action_type,
            state=self._log.state,
            outputs=self._outputs,
            error=error,
            attempts=self._attempt,
            duration_ms=duration_ms,
        )
        if event_type is EventType.SUCCEEDED:
            return outcome
        if event_type is EventType.CANCELLED:
            raise asyncio.CancelledError
        _fail(outcome)

    async def _flush_to_the_end(self) -> None:
        """Flush even if a cancellation arrives now: the action has already ended."""
        while True:
            try:
                await self._flush()
            except asyncio.CancelledError:
                continue
            return

    async def _flush(self) -> None:
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
                # A local activity's failure may arrive unwrapped (not as an ActivityError).
                if isinstance(failure, CancelledError) or isinstance(failure.cause, CancelledError):
                    raise asyncio.CancelledError from failure
                workflow.logger.warning("Kafka is slow or down; transitions wait in the outbox")
                out = await workflow.execute_activity(
                    names.EMIT_TRANSITIONS,
                    EmitInput(events=self._log.pending()),
                    result_type=EmitOutput,
                    start_to_close_timeout=DURABLE_EMIT_TIMEOUT,
                    retry_policy=DURABLE_EMIT_RETRY,
                )
            self._log.acknowledge(out.emitted_seq)

    def _record_requested(self, args: dict[str, Any] | None) -> None:
        """REQUESTED is always seq 1; without validated args every value is redacted."""
        if self._log.last_seq:
            return
        if args is None:
            args = redact_params(None, self._request.params)
        self._log.record(
            EventType.REQUESTED,
            workflow.info().workflow_start_time,
            TransitionAttrs(command=self._request.action_type, args=args),
        )

    def _record(
        self, event_type: EventType, attrs: TransitionAttrs, *, at: datetime | None = None
    ) -> None:
        self._log.record(event_type, at or workflow.now(), attrs)

    def _index_state(self) -> None:
        """Keep the KarmaState search attribute current (once per workflow task)."""
        state = self._log.state
        if self._indexing and state is not self._indexed_state:
            workflow.upsert_search_attributes([search_attributes.STATE.value_set(state.value)])
            self._indexed_state = state


def _fail(outcome: ActionOutcome) -> NoReturn:
    error = outcome.error or _internal("failed without an error")
    raise ApplicationError(error.message, outcome, type=error.type.value, non_retryable=True)


def _internal(message: str) -> ErrorInfo:
    return ErrorInfo(type=ErrorType.INTERNAL, message=message)


def _millis(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)
