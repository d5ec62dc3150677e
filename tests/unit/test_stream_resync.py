"""A stream's resync asks Temporal again when a query times out, instead of ending."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.service import RPCError, RPCStatusCode

from karma.api import app


class FlakyReads:
    """Times out `failures` times, then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def status(self, handle: Any, *, not_before: float) -> tuple[str, bool]:
        self.calls += 1
        if self.calls <= self.failures:
            raise RPCError("Timeout expired", RPCStatusCode.CANCELLED, b"")
        return "status", False


async def test_a_timed_out_query_is_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # No backoff here (never patch asyncio itself: the session's loop runs servers too).
    monkeypatch.setattr(app, "RESYNC_FIRST_DELAY_S", 0.0)
    reads = FlakyReads(failures=3)
    assert await app._resync(reads, object(), 0.0) == ("status", False)  # type: ignore[arg-type]
    assert reads.calls == 4
    hopeless = FlakyReads(failures=100)
    with pytest.raises(RPCError):
        await app._resync(hopeless, object(), 0.0)  # type: ignore[arg-type]
    assert hopeless.calls == app.RESYNC_ATTEMPTS
