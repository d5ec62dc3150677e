"""What a failed activity means for the action (pure classification, workflow-safe)."""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.common import RetryPolicy as TemporalRetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    TimeoutError,
    TimeoutType,
)

with workflow.unsafe.imports_passed_through():
    from karma.errors import ErrorInfo, ErrorType
    from karma.meta import RetryPolicy
    from karma.workflow_io import ExecuteFailure, ExecuteHeartbeat


def classify(err: ActivityError) -> tuple[ErrorInfo, int]:
    """The error, and the highest seq the attempt got acknowledged by Kafka.

    Raises:
        asyncio.CancelledError: the activity was cancelled (the action is being cancelled).
    """
    cause = err.cause
    if isinstance(cause, CancelledError):
        raise asyncio.CancelledError from err
    if isinstance(cause, ApplicationError) and cause.details:
        failure = ExecuteFailure.model_validate(cause.details[0])
        return failure.error, failure.emitted_seq
    if isinstance(cause, TimeoutError):
        emitted = 0
        if cause.last_heartbeat_details:
            emitted = ExecuteHeartbeat.model_validate(cause.last_heartbeat_details[0]).emitted_seq
        heartbeat = cause.type is TimeoutType.HEARTBEAT
        return (
            ErrorInfo(
                type=ErrorType.HEARTBEAT_TIMEOUT if heartbeat else ErrorType.TIMEOUT,
                message=(
                    "the worker stopped heartbeating (lost or stuck)"
                    if heartbeat
                    else "the attempt ran longer than the action's timeout"
                ),
                retryable=True,
            ),
            emitted,
        )
    if isinstance(cause, ApplicationError):
        info = ErrorInfo(
            type=ErrorType.INTERNAL,
            message=cause.message,
            code=cause.type or "",
            retryable=not cause.non_retryable,
        )
        return info, 0
    return ErrorInfo(type=ErrorType.INTERNAL, message=str(cause or err), retryable=True), 0


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
