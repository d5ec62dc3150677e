"""What a cancellation means at each point of an action's run: the one policy every kind
of action uses (the kinds only call it).

- During an attempt: the attempt is cancelled and waited for; it reports what Kafka
  acknowledged. A failed attempt is never retried once a cancellation was requested.
- Between units of work (`checkpoint`): a cancellation that work finishing anyway absorbed
  (it stays requested on the workflow's task) still cancels, before the next unit starts.
- During a wait (callbacks, a decision, a backoff, an iteration's delay): the wait ends
  (contract 4: once the flush that may run beside it has Kafka's answer).
- During a rollback, or the report of what stays undone (`uncancellable`): it is ignored.
- After the terminal transition (`to_the_end`): it is ignored; the outbox is emptied.
Cancellation surfaces as `asyncio.CancelledError`; `ActionWorkflow.run` turns it into the
one CANCELLED ending (`ending`), and a transactional action compensates first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, CancelledError, FailureError

from workflows._ending import Ending

with workflow.unsafe.imports_passed_through():
    from karma.errors import ErrorInfo, ErrorType
    from karma.lifecycle import EventType

T = TypeVar("T")

ON_REQUEST = ErrorInfo(type=ErrorType.CANCELLED, message="cancelled on request")
# An attempt being cancelled is waited for: it says what Kafka acknowledged meanwhile.
DURING_ATTEMPT = workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED


def requested() -> bool:
    """Whether a cancellation was requested, even one that an activity finishing
    successfully absorbed (replay-safe: the request is in the history)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def checkpoint() -> None:
    """Between units of work: stop here if a cancellation was requested."""
    if requested():
        raise asyncio.CancelledError


def after_failed_attempt(error: ErrorInfo) -> bool:
    """Whether a failed attempt cancels: it is not retried once a cancellation was
    requested, and an attempt that stopped for the cancellation (and said what Kafka
    acknowledged) cancels."""
    return requested() or error.type is ErrorType.CANCELLED


def of_activity(err: ActivityError) -> None:
    """An activity cancelled without saying more is the action being cancelled."""
    if isinstance(err.cause, CancelledError):
        raise asyncio.CancelledError from err


def of_local_activity(failure: FailureError) -> None:
    """A local activity's cancellation may arrive unwrapped (not as an ActivityError)."""
    if isinstance(failure, CancelledError) or isinstance(failure.cause, CancelledError):
        raise asyncio.CancelledError from failure


def ending(outputs: dict[str, Any], at: datetime | None = None) -> Ending:
    """The one CANCELLED ending; `at`: when the attempt that stopped for it ended (else
    the time is taken when it is recorded)."""
    return Ending(EventType.CANCELLED, outputs=dict(outputs), error=ON_REQUEST, at=at)


async def uncancellable(running: Awaitable[T]) -> T:
    """Wait for `running` (an activity, or a whole rollback) to the end, whatever
    cancellations arrive meanwhile."""
    return (await absorbing(running))[0]


async def absorbing(running: Awaitable[T]) -> tuple[T, bool]:
    """Wait for `running` to the end whatever cancellations arrive meanwhile; its result,
    and whether a cancellation arrived (for the caller to raise once it is safe)."""
    task = asyncio.ensure_future(running)
    cancelled = False
    while True:
        try:
            return await asyncio.shield(task), cancelled
        except asyncio.CancelledError:
            if task.cancelled():  # `running` itself was cancelled (the workflow evicted)
                raise
            cancelled = True


async def to_the_end(work: Callable[[], Awaitable[None]]) -> None:
    """Run `work` again until it completes without being cancelled."""
    while True:
        try:
            await work()
        except asyncio.CancelledError:
            continue
        return


async def interruptible(work: Awaitable[T]) -> T | None:
    """`work`'s result, or None if a cancellation interrupted it (for a kind that must do
    something before it ends cancelled, such as a rollback)."""
    try:
        return await work
    except asyncio.CancelledError:
        return None
