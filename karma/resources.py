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
import contextvars
import http.cookiejar
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from importlib.metadata import entry_points
from typing import Any, ClassVar

import httpx

from karma.errors import PermanentError, TransientError
from karma.settings import KafkaSettings

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "karma.resources"
CREATE_TIMEOUT_S = 30.0
UNHEALTHY_RECHECK_S = 1.0  # an unhealthy resource is tried again this soon
UNHEALTHY_RETRY_S = 2.0  # and an attempt refused for it comes back this soon
RETIRE_AFTER_S = 60.0  # a replaced resource is closed after this (attempts using it end)


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


def _NO_COOKIES() -> http.cookiejar.CookieJar:
    return http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


class ServiceClient(ResourceSupplier):
    """A configured service: a pooled HTTP client on its base URL (as many connections as
    a worker runs activities at once, Temporal's default 100)."""

    health_path: ClassVar[str] = "/health"
    pool_size: ClassVar[int] = 100

    def __init__(self, name: str, base_url: str, *, check_interval_s: float | None = None):
        self.name = name  # type: ignore[misc]
        self.base_url = base_url.rstrip("/")
        if check_interval_s is not None:
            self.check_interval_s = check_interval_s  # type: ignore[misc]

    async def create(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=self.pool_size)
        return httpx.AsyncClient(
            base_url=self.base_url,
            limits=limits,
            timeout=30.0,
            cookies=_NO_COOKIES(),  # one action's cookies are never sent with another's
        )

    async def check(self, resource: httpx.AsyncClient) -> None:
        # Its own connection, not one of the pool's (a busy pool is not a sick service).
        async with httpx.AsyncClient(base_url=self.base_url, timeout=5.0) as probe:
            response = await probe.get(self.health_path)
        # Any answer but a server error: a service without /health (404), behind
        # authentication (401) or redirecting is up.
        if response.status_code >= 500:
            raise RuntimeError(f"GET {self.health_path} answered {response.status_code}")

    async def close(self, resource: httpx.AsyncClient) -> None:
        await resource.aclose()


KAFKA = "kafka"


class KafkaProducer(ResourceSupplier):
    """The worker's Kafka (its settings), as a producer actions publish with."""

    name = KAFKA

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings

    async def create(self) -> Any:
        from aiokafka import AIOKafkaProducer

        from karma.kafka_config import producer_kwargs

        producer = AIOKafkaProducer(**producer_kwargs(self._settings))
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        return producer

    async def check(self, resource: Any) -> None:
        if not await resource.partitions_for(self._settings.topics.dlq):
            raise RuntimeError(f"no metadata for {self._settings.topics.dlq}")

    async def close(self, resource: Any) -> None:
        await resource.stop()


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
        self._retiring: set[asyncio.Task[None]] = set()

    @classmethod
    def for_worker(
        cls,
        services: Mapping[str, str],
        *,
        check_interval_s: float | None = None,
        kafka: KafkaSettings | None = None,
    ) -> ResourceManager:
        """The configured services' clients, a Kafka producer (`kafka`) and the suppliers
        registered as entry points."""
        suppliers: list[ResourceSupplier] = [
            ServiceClient(name, url, check_interval_s=check_interval_s)
            for name, url in services.items()
        ]
        if kafka is not None and KAFKA not in services:
            suppliers.append(KafkaProducer(kafka))
        for point in entry_points(group=ENTRY_POINT_GROUP):
            try:
                supplier = point.load()()
            except Exception:  # one broken plugin must not stop the worker
                log.exception("resource supplier %s could not be loaded", point.name)
                continue
            if supplier.name in services:
                log.warning("resource %s: KARMA_SERVICES__%s is used, not the supplier %s",
                            supplier.name, supplier.name.upper(), point.value)  # fmt: skip
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
                raise PermanentError(
                    f"no resource {name!r} on this worker (it has: {known}): set "
                    f"KARMA_SERVICES__{name.upper()} or register a karma.resources supplier"
                )
            out[name] = await self._healthy(held)
        return out

    async def _healthy(self, held: _Held) -> Any:
        if held.health is Health.NOT_CREATED:  # the lock only for the first creation
            async with held.lock:
                if held.health is Health.NOT_CREATED and not self._closed:
                    await self._create(held)
        if self._closed:
            raise TransientError("the worker is shutting down")
        if held.health is not Health.HEALTHY:
            raise TransientError(
                f"resource {held.supplier.name} is unhealthy: {held.last_error or 'not created'}",
                retry_after=min(held.supplier.check_interval_s, UNHEALTHY_RETRY_S),
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
            self._mark(held, await self._checked(held, resource), held.last_error)
        if held.watcher is None:  # not in the first caller's context (its trace, its logs)
            held.watcher = asyncio.get_running_loop().create_task(
                self._watch(held), context=contextvars.Context()
            )

    async def _checked(self, held: _Held, resource: Any) -> Health:
        """Its health by the supplier's check (the error noted when unhealthy)."""
        try:
            await asyncio.wait_for(held.supplier.check(resource), CREATE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001
            held.last_error = f"{exc!r}"[:500]
            return Health.UNHEALTHY
        held.last_error = ""
        return Health.HEALTHY

    def _mark(self, held: _Held, health: Health, error: str) -> None:
        if health is not held.health and held.health is not Health.NOT_CREATED:
            log.warning("resource %s: %s -> %s %s", held.supplier.name, held.health, health, error)
        held.health, held.last_error = health, error
        held.last_check = datetime.now(UTC)

    async def _watch(self, held: _Held) -> None:
        """Check it every interval (sooner while it is unhealthy); one that turned
        unhealthy is made again, and the one it replaces is closed once the attempts
        using it are likely done."""
        while not self._closed:
            healthy = held.health is Health.HEALTHY
            interval = held.supplier.check_interval_s
            await asyncio.sleep(interval if healthy else min(interval, UNHEALTHY_RECHECK_S))
            if self._closed:
                return
            current = held.resource
            if current is not None and held.health is Health.HEALTHY:
                health = await self._checked(held, current)  # no lock: attempts go on
                self._mark(held, health, held.last_error)
                if health is Health.HEALTHY:
                    continue
            await self._recreate(held)

    async def _recreate(self, held: _Held) -> None:
        error = held.last_error
        try:
            fresh = await asyncio.wait_for(held.supplier.create(), CREATE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001
            self._mark(held, Health.UNHEALTHY, f"cannot create it: {exc!r}"[:500])
            return
        health = await self._checked(held, fresh)
        if health is not Health.HEALTHY:
            with contextlib.suppress(Exception):
                await held.supplier.close(fresh)
            self._mark(held, Health.UNHEALTHY, held.last_error or error)
            return
        async with held.lock:
            old, held.resource = held.resource, fresh
            held.created += 1
            if self._closed:  # closed meanwhile: this one too
                held.resource = None
                old = fresh
            else:
                self._mark(held, Health.HEALTHY, "")
        if old is not None:
            self._retire(held.supplier, old)
        log.info("resource %s made again", held.supplier.name)

    def _retire(self, supplier: ResourceSupplier, resource: Any) -> None:
        """Close a replaced resource once the attempts that got it are likely done."""

        async def later() -> None:
            try:
                await asyncio.sleep(RETIRE_AFTER_S)
            finally:  # at once when the manager closes (cancelling this)
                with contextlib.suppress(Exception):
                    await supplier.close(resource)

        task = asyncio.get_running_loop().create_task(later(), context=contextvars.Context())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        """Close every resource (the worker is stopping: its attempts are done)."""
        self._closed = True
        for task in list(self._retiring):
            task.cancel()
        for held in self._held.values():
            if held.watcher is not None:
                held.watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await held.watcher
            async with held.lock:
                if held.resource is not None:
                    with contextlib.suppress(Exception):
                        await held.supplier.close(held.resource)
                    held.resource = None
                held.health = Health.CLOSED
        # What was being retired is closed now rather than later.
        await asyncio.gather(*self._retiring, return_exceptions=True)

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
