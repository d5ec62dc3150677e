"""One attempt of an executor method inside an activity: publish the pending transitions
meanwhile, heartbeat, and say how it ended (outputs or a typed failure, what Kafka
acknowledged, and when, as a replay-stable time for the transitions that follow)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from karma.errors import ErrorInfo, ErrorType, KarmaError, TransientError
from karma.payload_size import check_result
from karma.request import ActionRequest
from karma.workflow_io import AttemptOutput, ExecuteFailure, ExecuteHeartbeat

log = logging.getLogger("karma.action")

Out = TypeVar("Out", bound=AttemptOutput)

HEARTBEATS_PER_TIMEOUT = 3
# Cancellation reaches an activity only through a heartbeat response, so heartbeats are
# also how fast a cancelled executor stops (the worker throttles to the same interval).
MAX_HEARTBEAT_INTERVAL = timedelta(seconds=2)


class AttemptClock:
    """The time on the server's clock (the one `workflow.now()` reads: in a time-skipping
    test it is not the wall clock): when the attempt started there, plus the time it has
    run here."""

    def __init__(self) -> None:
        self._started = activity.info().started_time
        self._monotonic = time.monotonic()

    def now(self) -> datetime:
        return self._started + timedelta(seconds=time.monotonic() - self._monotonic)


async def run_attempt(
    method: Callable[[], Awaitable[Out]],
    emit: Callable[[ExecuteHeartbeat], Awaitable[int]],
    *,
    max_payload_bytes: int,
) -> Out:
    """Run `method` while `emit` publishes the pending transitions."""
    clock = AttemptClock()
    acked = ExecuteHeartbeat()
    emission = asyncio.ensure_future(emit(acked))
    heartbeat = asyncio.ensure_future(heartbeat_forever(acked))
    try:
        output = await method()
        check_result(output, output.outputs, max_payload_bytes, "the attempt's result")
    except Exception as exc:
        raise application_error(exc, clock, await _settle(emission)) from exc
    except BaseException as exc:
        details = activity.cancellation_details()
        if not (isinstance(exc, asyncio.CancelledError) and details and details.cancel_requested):
            emission.cancel()
            raise
        # The action is being cancelled. Say what Kafka acknowledged (a cancellation
        # carries no details), so the workflow does not publish those transitions again.
        raise _cancelled(clock, await _settle(emission)) from exc
    finally:
        heartbeat.cancel()
    output.emitted_seq = await _settle(emission)
    output.finished_at = clock.now()
    return output


def application_error(
    exc: Exception, clock: AttemptClock, emitted_seq: int = 0
) -> ApplicationError:
    """The failure of an executor call, with its classification in the details."""
    error = ErrorInfo.from_exception(exc)
    failure = ExecuteFailure(error=error, emitted_seq=emitted_seq, failed_at=clock.now())
    return ApplicationError(
        error.message,
        failure,
        type=error.type.value,
        non_retryable=not error.retryable,
        next_retry_delay=_delay(exc),
        # A failure the executor raised on purpose is an expected outcome, not a worker
        # problem: keep it out of the worker's warning log and metrics.
        category=(
            ApplicationErrorCategory.BENIGN
            if isinstance(exc, KarmaError)
            else ApplicationErrorCategory.UNSPECIFIED
        ),
    )


def _cancelled(clock: AttemptClock, emitted_seq: int) -> ApplicationError:
    error = ErrorInfo(type=ErrorType.CANCELLED, message="cancelled on request")
    return ApplicationError(
        error.message,
        ExecuteFailure(error=error, emitted_seq=emitted_seq, failed_at=clock.now()),
        type=error.type.value,
        non_retryable=True,
        category=ApplicationErrorCategory.BENIGN,
    )


async def _settle(emission: Awaitable[int]) -> int:
    """The seq Kafka acknowledged; a failed emission acknowledged nothing."""
    with contextlib.suppress(Exception):
        return await emission
    return 0


async def heartbeat_forever(acked: ExecuteHeartbeat) -> None:
    """Heartbeat so a lost worker is noticed within the heartbeat timeout and so
    cancellation reaches the executor; the details say what Kafka acknowledged."""
    timeout = activity.info().heartbeat_timeout or timedelta(seconds=30)
    interval = min(timeout / HEARTBEATS_PER_TIMEOUT, MAX_HEARTBEAT_INTERVAL).total_seconds()
    # Sleep first: an attempt that ends within one interval (most do) costs the server no
    # heartbeat at all.
    while True:
        await asyncio.sleep(interval)
        activity.heartbeat(acked)


def _delay(exc: Exception) -> timedelta | None:
    if isinstance(exc, TransientError) and exc.retry_after is not None:
        return timedelta(seconds=exc.retry_after)
    return None


def logger_for(request: ActionRequest) -> logging.LoggerAdapter[logging.Logger]:
    return logging.LoggerAdapter(
        log, {"action_id": request.action_id, "action_type": request.action_type}
    )
