"""Supplied resources: named, long-lived things executors share (an HTTP client pool for a
service, a database pool, an SDK client), created lazily by the worker, health-checked on
an interval, recreated when they turn unhealthy, and closed on shutdown.

A supplier is registered in the `karma.resources` entry-point group (like actions) or
comes built in: every service configured as `KARMA_SERVICES__<NAME>` is a resource
`<name>` (a pooled `httpx.AsyncClient` on its base URL, healthy while `GET /health`
answers 2xx), which `ctx.invoke_service` then uses. An executor names what it needs in
`ActionMeta.required_services`; an attempt whose resource is unhealthy fails as transient
with the reason (so it is retried, never run against a broken dependency), and gets the
healthy ones as `ctx.resource(name)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from importlib.metadata import entry_points
from typing import Any, ClassVar

import httpx

from karma.errors import PermanentError, TransientError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "karma.resources"
CREATE_TIMEOUT_S = 30.0


class ResourceSupplier(ABC):
    """How to create, check and close one named resource."""

    name: ClassVar[str]
    pool_size: ClassVar[int] = 10
    check_interval_s: ClassVar[float] = 15.0

    @abstractmethod
    async def create(self) -> Any:
        """A new resource (raise when it cannot be made now)."""

    async def check(self, resource: Any) -> None:  # noqa: B027 - healthy unless it says so
        """Raise when the resource is unhealthy."""

    async def close(self, resource: Any) -> None:  # noqa: B027 - nothing to close by default
        """Release it."""


class ServiceClient(ResourceSupplier):
    """A configured service: a pooled HTTP client on its base URL."""

    health_path: ClassVar[str] = "/health"

    def __init__(self, name: str, base_url: str, *, check_interval_s: float | None = None):
        self.name = name  # type: ignore[misc]
        self.base_url = base_url.rstrip("/")
        if check_interval_s is not None:
            self.check_interval_s = check_interval_s  # type: ignore[misc]

    async def create(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=self.pool_size)
        return httpx.AsyncClient(base_url=self.base_url, limits=limits, timeout=30.0)

    async def check(self, resource: httpx.AsyncClient) -> None:
        response = await resource.get(self.health_path, timeout=5.0)
        if response.status_code >= 300:
            raise RuntimeError(f"GET {self.health_path} answered {response.status_code}")

    async def close(self, resource: httpx.AsyncClient) -> None:
        await resource.aclose()


class Health(StrEnum):
    NOT_CREATED = "not_created"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    CLOSED = "closed"


class _Held:
    def __init__(self, supplier: ResourceSupplier) -> None:
        self.supplier = supplier
        self.resource: Any = None
        self.health = Health.NOT_CREATED
        self.last_check: datetime | None = None
        self.last_error = ""
        self.created = 0
        self.lock = asyncio.Lock()
        self.watcher: asyncio.Task[None] | None = None


class ResourceManager:
    def __init__(self, suppliers: Iterable[ResourceSupplier]) -> None:
        self._held = {s.name: _Held(s) for s in suppliers}
        self._closed = False

    @classmethod
    def for_worker(
        cls, services: Mapping[str, str], *, check_interval_s: float | None = None
    ) -> ResourceManager:
        """The configured services' clients and the suppliers registered as entry points."""
        suppliers: list[ResourceSupplier] = [
            ServiceClient(name, url, check_interval_s=check_interval_s)
            for name, url in services.items()
        ]
        for point in entry_points(group=ENTRY_POINT_GROUP):
            try:
                supplier = point.load()()
            except Exception:  # one broken plugin must not stop the worker
                log.exception("resource supplier %s could not be loaded", point.name)
                continue
            suppliers.append(supplier)
        return cls(suppliers)

    @property
    def names(self) -> list[str]:
        return sorted(self._held)

    async def acquire(self, names: Iterable[str]) -> dict[str, Any]:
        """The healthy resources named, created if need be.

        Raises:
            karma.errors.PermanentError: a name no supplier provides.
            karma.errors.TransientError: one is unhealthy or cannot be created now.
        """
        out = {}
        for name in names:
            held = self._held.get(name)
            if held is None:
                known = ", ".join(self.names) or "none"
                raise PermanentError(f"no resource {name!r} on this worker (it has: {known})")
            out[name] = await self._healthy(held)
        return out

    async def _healthy(self, held: _Held) -> Any:
        async with held.lock:
            if self._closed:
                raise TransientError("the worker is shutting down")
            if held.health is Health.NOT_CREATED:
                await self._create(held)
        if held.health is not Health.HEALTHY:
            raise TransientError(
                f"resource {held.supplier.name} is unhealthy: {held.last_error or 'not created'}",
                retry_after=min(held.supplier.check_interval_s, 30.0),
            )
        return held.resource

    async def _create(self, held: _Held) -> None:
        """Create and check it (the lock held); start watching it."""
        try:
            resource = await asyncio.wait_for(held.supplier.create(), CREATE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - any reason is the reason it is unhealthy
            self._mark(held, Health.UNHEALTHY, f"cannot create it: {exc!r}"[:500])
        else:
            held.resource = resource
            held.created += 1
            await self._check(held)
        if held.watcher is None:
            held.watcher = asyncio.ensure_future(self._watch(held))

    async def _check(self, held: _Held) -> None:
        try:
            await asyncio.wait_for(held.supplier.check(held.resource), CREATE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001
            self._mark(held, Health.UNHEALTHY, f"{exc!r}"[:500])
        else:
            self._mark(held, Health.HEALTHY, "")

    def _mark(self, held: _Held, health: Health, error: str) -> None:
        if health is not held.health and held.health is not Health.NOT_CREATED:
            log.warning("resource %s: %s -> %s %s", held.supplier.name, held.health, health, error)
        held.health, held.last_error = health, error
        held.last_check = datetime.now(UTC)

    async def _watch(self, held: _Held) -> None:
        """Check it every interval; an unhealthy one is closed and made again."""
        while not self._closed:
            await asyncio.sleep(held.supplier.check_interval_s)
            async with held.lock:
                if self._closed:
                    return
                if held.health is Health.HEALTHY:
                    await self._check(held)
                if held.health is Health.UNHEALTHY:
                    await self._recreate(held)

    async def _recreate(self, held: _Held) -> None:
        if held.resource is not None:
            with contextlib.suppress(Exception):
                await held.supplier.close(held.resource)
            held.resource = None
        started = time.monotonic()
        error = held.last_error
        try:
            held.resource = await asyncio.wait_for(held.supplier.create(), CREATE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001
            self._mark(held, Health.UNHEALTHY, f"cannot create it: {exc!r}"[:500])
            return
        held.created += 1
        await self._check(held)
        if held.health is Health.UNHEALTHY and not held.last_error:
            held.last_error = error
        log.info(
            "resource %s made again in %.0f ms: %s",
            held.supplier.name, (time.monotonic() - started) * 1000, held.health,
        )  # fmt: skip

    async def close(self) -> None:
        """Close every resource (the worker is stopping)."""
        self._closed = True
        for held in self._held.values():
            if held.watcher is not None:
                held.watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await held.watcher
            if held.resource is not None:
                with contextlib.suppress(Exception):
                    await held.supplier.close(held.resource)
                held.resource = None
            held.health = Health.CLOSED

    def snapshot(self) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "health": held.health.value,
                "last_check": held.last_check.isoformat() if held.last_check else None,
                "last_error": held.last_error,
                "created": held.created,
                "pool_size": held.supplier.pool_size,
            }
            for name, held in sorted(self._held.items())
        ]
