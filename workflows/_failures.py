"""What a failed activity means for the action (pure classification, workflow-safe)."""

from __future__ import annotations

from temporalio import workflow
from temporalio.common import RetryPolicy as TemporalRetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError, TimeoutType

from workflows import _cancellation as cancellation

with workflow.unsafe.imports_passed_through():
    from karma.errors import ErrorInfo, ErrorType
    from karma.meta import RetryPolicy
    from karma.workflow_io import ExecuteFailure, ExecuteHeartbeat

# Attempts are retried by the workflow, so each one is recorded as a transition.
SINGLE_ATTEMPT = TemporalRetryPolicy(maximum_attempts=1)


def classify(err: ActivityError) -> ExecuteFailure:
    """The error, what Kafka acknowledged meanwhile and when it failed (when known).

    Raises:
        asyncio.CancelledError: the activity was cancelled (the action is being cancelled).
    """
    cancellation.of_activity(err)
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.details:
        return ExecuteFailure.model_validate(cause.details[0])
    if isinstance(cause, TimeoutError):
        emitted = 0
        if cause.last_heartbeat_details:
            emitted = ExecuteHeartbeat.model_validate(cause.last_heartbeat_details[0]).emitted_seq
        heartbeat = cause.type is TimeoutType.HEARTBEAT
        error = ErrorInfo(
            type=ErrorType.HEARTBEAT_TIMEOUT if heartbeat else ErrorType.TIMEOUT,
            message=(
                "the worker stopped heartbeating (lost or stuck)"
                if heartbeat
                else "the attempt ran longer than the action's timeout"
            ),
            retryable=True,
        )
        return ExecuteFailure(error=error, emitted_seq=emitted)
    if isinstance(cause, ApplicationError):
        error = ErrorInfo(
            type=ErrorType.INTERNAL,
            message=cause.message,
            code=cause.type or "",
            retryable=not cause.non_retryable,
        )
        return ExecuteFailure(error=error)
    error = ErrorInfo(type=ErrorType.INTERNAL, message=str(cause or err), retryable=True)
    return ExecuteFailure(error=error)


def internal(message: str) -> ErrorInfo:
    return ErrorInfo(type=ErrorType.INTERNAL, message=message)


def temporal_retry(policy: RetryPolicy) -> TemporalRetryPolicy:
    """The action's retry policy for activities Temporal retries itself."""
    return TemporalRetryPolicy(
        initial_interval=policy.initial_interval,
        backoff_coefficient=policy.backoff_coefficient,
        maximum_interval=policy.maximum_interval,
        maximum_attempts=policy.max_attempts,
    )
