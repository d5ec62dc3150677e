"""Retrying an operation against Kafka, ClickHouse or Temporal until it works or we stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRY_MAX_SECONDS = 30.0


class Stopped:
    """The caller was asked to stop while the operation was still failing."""


async def until_stopped(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    stopping: asyncio.Event,
    retryable: tuple[type[BaseException], ...],
) -> T | Stopped:
    """Retry `attempt` with backoff on `retryable` errors: a record is never skipped."""
    delay = 0.5
    while True:
        try:
            return await attempt()
        except retryable as exc:
            # One line per attempt, not a traceback: this may go on for a while.
            log.error("failed to %s, retrying in %.1fs: %r", what, delay, exc)  # noqa: TRY400
        try:
            await asyncio.wait_for(stopping.wait(), delay)
        except TimeoutError:
            delay = min(delay * 2, RETRY_MAX_SECONDS)
            continue
        return Stopped()
