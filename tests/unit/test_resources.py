"""The resource manager with a supplier the test controls: lazy creation shared by
callers, an unhealthy resource refused as transient, made again once healthy, closed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from karma.errors import PermanentError, TransientError
from karma.resources import ResourceManager, ResourceSupplier


class Pool(ResourceSupplier):
    name = "pool"
    check_interval_s = 0.05

    def __init__(self) -> None:
        self.made: list[dict[str, Any]] = []
        self.closed: list[dict[str, Any]] = []
        self.healthy = True
        self.creatable = True

    async def create(self) -> dict[str, Any]:
        if not self.creatable:
            raise ConnectionError("refused")
        made = {"n": len(self.made) + 1}
        self.made.append(made)
        return made

    async def check(self, resource: Any) -> None:
        if not self.healthy:
            raise ConnectionError("no answer")

    async def close(self, resource: Any) -> None:
        self.closed.append(resource)


async def until(condition: Any) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError


async def test_created_once_when_first_needed_and_shared() -> None:
    pool = Pool()
    manager = ResourceManager([pool])
    assert pool.made == []  # lazily
    got = await asyncio.gather(*(manager.acquire(["pool"]) for _ in range(5)))
    assert len(pool.made) == 1 and all(g["pool"] is pool.made[0] for g in got)
    with pytest.raises(PermanentError, match="no resource 'db'"):
        await manager.acquire(["db"])
    await manager.close()
    assert pool.closed == [pool.made[0]]
    assert manager.snapshot()[0]["health"] == "closed"


async def test_an_unhealthy_resource_is_refused_then_made_again() -> None:
    pool = Pool()
    manager = ResourceManager([pool])
    await manager.acquire(["pool"])
    pool.healthy = False
    await until(lambda: manager.snapshot()[0]["health"] == "unhealthy")
    with pytest.raises(TransientError, match="resource pool is unhealthy"):
        await manager.acquire(["pool"])
    pool.healthy = True
    await until(lambda: manager.snapshot()[0]["health"] == "healthy")
    got = await manager.acquire(["pool"])
    assert got["pool"] is pool.made[-1] and len(pool.made) >= 2
    # The one it replaced stays open a while for the attempts that still use it...
    assert pool.made[0] not in pool.closed
    await manager.close()
    assert pool.made[0] in pool.closed and pool.made[-1] in pool.closed  # ...not past close


async def test_one_that_cannot_be_created_is_unhealthy_with_the_reason() -> None:
    pool = Pool()
    pool.creatable = False
    manager = ResourceManager([pool])
    with pytest.raises(TransientError, match="cannot create it"):
        await manager.acquire(["pool"])
    pool.creatable = True
    await until(lambda: manager.snapshot()[0]["health"] == "healthy")
    assert (await manager.acquire(["pool"]))["pool"] is pool.made[0]
    await manager.close()
