"""Karma on one machine: the embedded servers, plus a worker and the bridge in this process.

`karma dev`, `karma demo`, the benchmark and the integration tests all start Karma this way.
With embedded chdb this process owns the ClickHouse data path, so it is also the only one
that can read the ledger while running (`EmbeddedKarma.ledger`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta

from temporalio.client import Client

from bridge.emit import TransitionPublisher
from bridge.ledger import Ledger, PastActions
from bridge.reconcile import ReconcileReport, reconcile
from bridge.service import Bridge
from karma.api.keys import local_admin_key
from karma.api.server import ApiServer, api_services
from karma.client import KarmaClient, connect_temporal
from karma.component import Component
from karma.embedded import EmbeddedServers
from karma.first_to_stop import first_to_stop
from karma.reference_service import ReferenceService
from karma.registry import ActionRegistry
from karma.secrets import SecretSealer
from karma.settings import Settings
from karma.telemetry import tracing_interceptors
from workers.entropy import EntropyWorker
from workers.worker import ActionWorker

RECONCILE_WINDOW = timedelta(hours=1)
RECONCILE_CATCH_UP_SECONDS = 30.0


class EmbeddedKarma(Component):
    """Starts servers, bridge and worker in order and stops them in reverse."""

    def __init__(
        self,
        settings: Settings,
        *,
        persistent: bool = True,
        registry: ActionRegistry | None = None,
        progress: Callable[[str], None] = lambda message: None,
        reference_service: bool = True,
        reconcile: bool = True,
    ) -> None:
        self._reconcile = reconcile
        self.settings = settings
        self._with_reference_service = reference_service
        self.reference_service: ReferenceService | None = None
        self._progress = progress
        self.servers = EmbeddedServers(settings, persistent=persistent)
        # Its Web UI decodes payloads through this API's /codec (configured on the server).
        ui = self.servers.temporal.ui_url
        origins = [o for o in (ui, ui.replace("//127.0.0.1:", "//localhost:")) if o]
        codec = settings.codec.model_copy(
            update={
                "ui_origins": list(dict.fromkeys([*settings.codec.ui_origins, *origins])),
                "ui_without_key": True,  # honoured while the API listens on loopback
            }
        )
        self.settings = settings = settings.model_copy(update={"codec": codec})
        self._registry = registry
        self._stack = contextlib.AsyncExitStack()
        self._temporal: Client | None = None
        self._ledger: Ledger | None = None
        # This process owns the embedded ledger: its client and worker answer a request
        # whose action ran before (past Temporal's retention) from it.
        self._past = PastActions(settings.clickhouse_dsn, settings.clickhouse.database)
        self.worker: ActionWorker | None = None
        self.entropy: EntropyWorker | None = None
        self.bridge: Bridge | None = None
        self.api: ApiServer | None = None
        self.admin_key: str | None = None  # the API's local admin key (auth on)
        self.admin_key_created = False

    @property
    def temporal(self) -> Client:
        if self._temporal is None:
            raise RuntimeError("EmbeddedKarma is not started")
        return self._temporal

    @property
    def client(self) -> KarmaClient:
        return KarmaClient(
            self.temporal,
            task_queue=self.settings.temporal.task_queue,
            registry=self._registry,
            search_attributes=self.settings.temporal.search_attributes,
            sealer=SecretSealer.from_settings(self.settings),
            limits=self.settings.limits,
            past=self._past,
        )

    @property
    def ledger(self) -> Ledger:
        """A reading connection to the ledger (blocking calls)."""
        if self._ledger is None:
            self._ledger = Ledger.open(
                self.settings.clickhouse_dsn, self.settings.clickhouse.database
            )
        return self._ledger

    async def _start(self) -> None:
        self._progress("starting the Temporal dev server and the Kafka broker…")
        await self._stack.enter_async_context(self.servers)
        self._temporal = await connect_temporal(
            self.settings, interceptors=tracing_interceptors(self.settings.otel), sdk_metrics=True
        )
        self._progress("starting the bridge (topics, ledger schema, consumer groups)…")
        self.bridge = Bridge(self.settings, client=self.client)
        await self._stack.enter_async_context(self.bridge)
        if self._with_reference_service and "jobs" not in self.settings.services:
            self._progress("starting the reference jobs service…")
            self.reference_service = ReferenceService(self.settings.kafka)
            await self._stack.enter_async_context(self.reference_service)
            # It is also the inventory the built-in reference resolvers ask.
            services = {
                "inventory": self.reference_service.url,
                **self.settings.services,
                "jobs": self.reference_service.url,
            }
            self.settings = self.settings.model_copy(update={"services": services})
        self._progress("starting the worker…")
        self.worker = ActionWorker(
            self._temporal, self.settings, registry=self._registry, past=self._past
        )
        await self._stack.enter_async_context(self.worker)
        self.entropy = EntropyWorker(self._temporal, self.settings, self.client)
        await self._stack.enter_async_context(self.entropy)
        if self.settings.api.enabled:
            self._progress("starting the API…")
            if self.settings.api.auth:
                self.admin_key, self.admin_key_created = local_admin_key(self.settings)
            client = self.client
            served = api_services(self.settings, client, self._past, self.servers.temporal.ui_url)
            served.resources = self.worker.resources.snapshot  # this process's worker
            self.api = ApiServer(served)
            await self._stack.enter_async_context(self.api)
        if self._reconcile:
            await self.reconcile()

    async def reconcile(self, since: datetime | None = None) -> ReconcileReport:
        """Publish again what Temporal recorded and the ledger lacks (transitions lost with
        an in-memory broker after a crash). By default: actions running now or closed in
        the hour before the ledger's newest row."""
        assert self.bridge is not None, "start() first"
        self._progress("reconciling the ledger with Temporal…")
        if since is None:
            newest = await asyncio.to_thread(self.ledger.last_ingested_at)
            since = newest - RECONCILE_WINDOW if newest is not None else None
        bridge = self.bridge
        async with TransitionPublisher(self.settings.kafka) as publisher:
            report = await reconcile(
                self.temporal,
                self.ledger,
                publisher,
                since=since,
                caught_up=lambda: bridge.catch_up(RECONCILE_CATCH_UP_SECONDS),
                progress=self._progress,
            )
        self._progress(f"reconciled: {report.summary()}")
        return report

    async def drain(self) -> None:
        """Stop taking new work (ingress, then the worker, whose running activities may
        finish), then let the ledger catch up with Kafka; `stop` does the rest."""
        if self.bridge is not None:
            await self.bridge.stop_intake()
        if self.worker is not None:
            self._progress("stopping the worker (running attempts may finish)…")
            await self.worker.stop()
        if self.bridge is not None:
            await self.bridge.drain(self._progress)

    async def wait(self) -> None:
        """Return (or raise) when the worker or the bridge stops by itself."""
        assert self.worker is not None and self.bridge is not None, "start() first"
        api = [self.api.wait()] if self.api is not None else []
        entropy = [self.entropy.wait()] if self.entropy is not None else []
        await first_to_stop(self.worker.wait(), self.bridge.wait(), *api, *entropy)

    async def _stop(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None
        await self._stack.aclose()
        self._past.close()
