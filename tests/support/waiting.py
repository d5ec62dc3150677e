"""Waiting for an action to get somewhere, with a deadline."""

from __future__ import annotations

import asyncio
import uuid

from karma.client import ActionHandle
from karma.lifecycle import ActionState
from karma.status import ActionStatus
from workers.embedded import EmbeddedKarma


async def reached(handle: ActionHandle, state: ActionState, timeout: float = 30) -> ActionStatus:
    """The action's status once it is in `state`."""
    async with asyncio.timeout(timeout):
        while True:
            status = await handle.status()
            if status.state is state:
                return status
            await asyncio.sleep(0.05)


async def waiting_jobs(
    karma: EmbeddedKarma, count: int, *, prefix: str = "job", wait_seconds: float = 120
) -> tuple[list[str], list[ActionHandle]]:
    """`count` event-driven test actions, each WAITING on its own external id."""
    externals = [f"{prefix}-{uuid.uuid4().hex[:12]}" for _ in range(count)]
    handles = [
        await karma.client.request("test.await", {"external_id": e, "wait_seconds": wait_seconds})
        for e in externals
    ]
    for handle in handles:
        await reached(handle, ActionState.WAITING)
    return externals, handles
