"""Waiting on several long-running parts at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable


async def first_to_stop(*waits: Awaitable[None]) -> None:
    """Return (or raise its error) when the first of `waits` finishes; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    if not tasks:
        return
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
