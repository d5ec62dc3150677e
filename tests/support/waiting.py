"""Waiting for an action to get somewhere, with a deadline."""

from __future__ import annotations

import asyncio

from karma.client import ActionHandle
from karma.lifecycle import ActionState
from karma.status import ActionStatus


async def reached(handle: ActionHandle, state: ActionState, timeout: float = 30) -> ActionStatus:
    """The action's status once it is in `state`."""
    async with asyncio.timeout(timeout):
        while True:
            status = await handle.status()
            if status.state is state:
                return status
            await asyncio.sleep(0.05)
