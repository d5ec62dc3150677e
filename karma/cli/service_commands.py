"""`karma dev | service | api | worker | bridge | reference-service`: processes that run
until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import TYPE_CHECKING

from karma.settings import Settings, get_settings

if TYPE_CHECKING:
    from bridge.ledger import PastActions


@contextlib.asynccontextmanager
async def stop_signals() -> AsyncIterator[asyncio.Event]:
    """An event set by SIGINT/SIGTERM, installed before anything starts so that a signal
    during start-up still stops the process cleanly. A second signal cancels the caller
    (the drain on stop is not waited for)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def on_signal() -> None:
        if stop.is_set() and main is not None:
            main.cancel()  # a second signal: stop now, without waiting for the drain
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        yield stop
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def until_stopped(stop: asyncio.Event, running: Awaitable[None]) -> None:
    """Wait for the stop signal, or for the component to stop on its own (errors propagate)."""
    component = asyncio.ensure_future(running)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait([stopper, component], return_when=asyncio.FIRST_COMPLETED)
        if component in done:
            component.result()  # re-raise the component's failure
            raise RuntimeError("a component stopped unexpectedly")
    finally:
        for task in (stopper, component):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def dev(args: argparse.Namespace) -> int:
    from workers.embedded import EmbeddedKarma

    settings = get_settings()
    _serve_metrics(settings)
    async with (
        stop_signals() as stop,
        EmbeddedKarma(
            settings, persistent=not args.in_memory, progress=lambda m: print(m, flush=True)
        ) as karma,
    ):
        api_url = karma.api.url if karma.api is not None else ""
        print(_banner(karma.settings, karma.servers.temporal.ui_url, api_url), flush=True)
        if karma.admin_key is not None:
            print(_key_lines(karma.settings, karma.admin_key, karma.admin_key_created), flush=True)
        await until_stopped(stop, karma.wait())
        print("stopping: no new work; letting the ledger catch up…", flush=True)
        await karma.drain()
        print("stopped", flush=True)
    return 0


@contextlib.contextmanager
def ledger_reader(settings: Settings, *, owns_embedded: bool) -> Iterator[PastActions | None]:
    """The ledger, if this process may read it (see `PastActions.reachable`), closed after."""
    from bridge.ledger import PastActions

    past = PastActions.reachable(
        settings.clickhouse_dsn, settings.clickhouse.database, owns_embedded=owns_embedded
    )
    try:
        yield past
    finally:
        if past is not None:
            past.close()


async def worker(args: argparse.Namespace) -> int:
    from karma.client import connect_temporal
    from karma.telemetry import tracing_interceptors
    from workers.worker import ActionWorker

    settings = get_settings()
    _serve_metrics(settings)
    async with stop_signals() as stop:
        client = await connect_temporal(
            settings, interceptors=tracing_interceptors(settings.otel), sdk_metrics=True
        )
        with ledger_reader(settings, owns_embedded=False) as past:
            async with ActionWorker(client, settings, past=past) as running:
                print(
                    f"worker on task queue {running.task_queue!r} at {settings.temporal.address}",
                    flush=True,
                )
                await until_stopped(stop, running.wait())
                print("stopping: no new work; running attempts may finish…", flush=True)
    print("stopped", flush=True)
    return 0


async def api(args: argparse.Namespace) -> int:
    """The HTTP API alone, against the configured servers."""
    from karma.api.server import ApiServer, api_services
    from karma.client import KarmaClient

    settings = get_settings()
    async with stop_signals() as stop:
        with ledger_reader(settings, owns_embedded=False) as past:
            client = await KarmaClient.connect(settings, past=past)
            services = api_services(settings, client, past)
            async with ApiServer(services) as server:
                print(f"API at {server.url} (OpenAPI at {server.url}/docs)", flush=True)
                _warn_without_keys(settings)
                await until_stopped(stop, server.wait())
    print("stopped", flush=True)
    return 0


async def service(args: argparse.Namespace) -> int:
    """API, worker and bridge in one process, against the configured servers."""
    from bridge.service import Bridge
    from karma.api.server import ApiServer, api_services
    from karma.client import KarmaClient, connect_temporal
    from karma.first_to_stop import first_to_stop
    from karma.telemetry import tracing_interceptors
    from workers.entropy import EntropyWorker
    from workers.worker import ActionWorker

    settings = get_settings()
    _serve_metrics(settings)
    async with stop_signals() as stop:
        # The bridge writes the ledger from this process: it may read it too.
        with ledger_reader(settings, owns_embedded=True) as past:
            client = await KarmaClient.connect(settings, past=past)
            worker_client = await connect_temporal(
                settings, interceptors=tracing_interceptors(settings.otel), sdk_metrics=True
            )
            services = api_services(settings, client, past)
            worker = ActionWorker(worker_client, settings, past=past)
            services.resources = worker.resources.snapshot  # GET /v1/resources
            async with (
                Bridge(settings, client=client) as running_bridge,
                worker as running_worker,
                EntropyWorker(worker_client, settings, client) as running_scan,
                ApiServer(services) as server,
            ):
                print(
                    f"service: API at {server.url}, worker on {running_worker.task_queue!r}, "
                    f"bridge to {_dsn_for_display(settings)}",
                    flush=True,
                )
                _warn_without_keys(settings)
                await until_stopped(
                    stop,
                    first_to_stop(
                        running_worker.wait(),
                        running_bridge.wait(),
                        running_scan.wait(),
                        server.wait(),
                    ),
                )
                print("stopping: no new work; letting the ledger catch up…", flush=True)
                await running_bridge.stop_intake()
                await running_worker.stop()
                await running_bridge.drain(lambda message: print(message, flush=True))
    print("stopped", flush=True)
    return 0


async def bridge(args: argparse.Namespace) -> int:
    from bridge.service import Bridge

    settings = get_settings()
    _serve_metrics(settings)
    async with stop_signals() as stop, Bridge(settings) as running:
        print(
            f"bridge: Kafka {settings.kafka.bootstrap_servers} -> ClickHouse "
            f"{_dsn_for_display(settings)} (group {settings.bridge.consumer_group})",
            flush=True,
        )
        await until_stopped(stop, running.wait())
        print("stopping: no new work; letting the ledger catch up…", flush=True)
        await running.drain(lambda message: print(message, flush=True))
        print("stopped", flush=True)
    return 0


async def reference_service(args: argparse.Namespace) -> int:
    from karma.reference_service import ReferenceService

    settings = get_settings()
    service = ReferenceService(settings.kafka, host=args.host, port=args.port)
    async with stop_signals() as stop:
        await service.start()
        try:
            print(
                f"reference jobs service at {service.url}; events to Kafka "
                f"{settings.kafka.bootstrap_servers}",
                flush=True,
            )
            await stop.wait()
        finally:
            await service.stop()
    return 0


async def setup(args: argparse.Namespace) -> int:
    """Provision a deployment, idempotently: search attributes, topics, ledger schema."""
    from bridge.ledger import Ledger
    from bridge.topics import ensure_topics
    from karma import search_attributes
    from karma.client import connect_temporal

    settings = get_settings()
    client = await connect_temporal(settings)
    created = await search_attributes.register(client)
    print(f"Temporal search attributes: created {created or 'none (all present)'}")
    topics = await ensure_topics(settings.kafka)
    print(f"Kafka topics: created {topics or 'none (all present)'}")
    ledger = await asyncio.to_thread(
        Ledger.open, settings.clickhouse_dsn, settings.clickhouse.database
    )
    try:
        await asyncio.to_thread(ledger.migrate)
    finally:
        ledger.close()
    print(f"ClickHouse ledger schema ready in database {settings.clickhouse.database!r}")
    return 0


def _serve_metrics(settings: Settings) -> None:
    """Karma's Prometheus endpoint, when KARMA_METRICS__PORT is set."""
    from karma.metrics import serve

    try:
        port = serve(settings.metrics)
    except OSError as exc:
        raise OSError(f"cannot serve metrics on port {settings.metrics.port}: {exc}") from exc
    if port:
        print(f"Metrics     http://{settings.metrics.host}:{port}/metrics", flush=True)


def _banner(settings: Settings, ui_url: str, api_url: str) -> str:
    topics = settings.kafka.topics
    return "\n".join(
        [
            "Karma embedded stack is up",
            f"  Temporal    {settings.temporal.address}  namespace {settings.temporal.namespace},"
            f" task queue {settings.temporal.task_queue}",
            f"  Web UI      {ui_url}",
            *(
                [
                    f"  API         {api_url}  (OpenAPI at {api_url}/docs)",
                    f"  Console     {api_url}/console/",
                ]
                if api_url
                else []
            ),
            f"  Kafka       {settings.kafka.bootstrap_servers}  topics {', '.join(topics.all())}",
            f"  ClickHouse  {_dsn_for_display(settings)}  (owned by this process)",
            *(f"  Service     {name} at {url}" for name, url in sorted(settings.services.items())),
            f"  Data dir    {settings.data_dir.resolve()}  (server logs in logs/)",
            "Worker, bridge (ledger sink and ingress) and the reference jobs service run in "
            "this process. Press Ctrl-C to stop.",
        ]
    )


def _warn_without_keys(settings: Settings) -> None:
    from karma.api.keys import KeyStore

    if not settings.api.auth:
        print("the API answers without keys (KARMA_API__AUTH=false)", flush=True)
    elif not any(not k.revoked for k in KeyStore.of(settings).listed()):
        print(
            "no API key works yet: create one with `karma api-key create --scope admin`",
            flush=True,
        )


def _key_lines(settings: Settings, key: str, created: bool) -> str:
    from karma.api.keys import local_key_path

    path = local_key_path(settings).resolve()
    if created:
        return (
            f"  Admin key   {key}\n"
            f"              (new; kept in {path} for local commands: sign in to the console "
            "with it, or send it as `Authorization: Bearer`)"
        )
    return f"  Admin key   in {path}  (sign in to the console with it)"


def _dsn_for_display(settings: Settings) -> str:
    dsn = settings.clickhouse_dsn
    if "@" in dsn:  # hide credentials
        scheme, _, rest = dsn.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return dsn
