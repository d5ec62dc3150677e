"""The API served by uvicorn inside this process (`karma api`, `karma service`, `karma dev`)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator

import uvicorn

from bridge.ledger import PastActions
from karma.api.app import ApiServices, create_app
from karma.api.checks import standard_checks
from karma.api.hub import TransitionHub
from karma.client import KarmaClient
from karma.component import Component
from karma.settings import Settings


def api_services(
    settings: Settings, client: KarmaClient, past: PastActions | None, web_ui: str = ""
) -> ApiServices:
    """What an API process serves with: its own transition source, the readiness checks,
    and the ledger when this process can read it (`past`)."""
    return ApiServices(
        client=client,
        settings=settings,
        hub=TransitionHub(settings),
        checks=standard_checks(settings, client, past.ping if past else None),
        ledger=past.rows if past else None,
        history=past,
        analytics=past.sibling().read if past else None,
        web_ui=web_ui,
    )


STREAMS_END_S = 2.0


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the process that embeds it decides what a
    signal stops (uvicorn would take SIGINT/SIGTERM over and raise them again on exit)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class ApiServer(Component):
    """Binds its port when it starts (a port in use fails the start with that reason),
    serves until stopped; the shared transition source starts and stops with it."""

    def __init__(self, services: ApiServices) -> None:
        self.services = services
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None
        self.port = services.settings.api.port

    @property
    def url(self) -> str:
        return self.services.settings.api.url(self.port)

    async def _start(self) -> None:
        api = self.services.settings.api
        family = socket.AF_INET6 if ":" in api.host else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP, and
        # without it every response waits for a delayed ACK (40 ms).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((api.host, api.port))
        except OSError as exc:
            sock.close()
            raise OSError(
                f"the API cannot listen on {api.host}:{api.port} ({exc.strerror}); "
                "set KARMA_API__PORT"
            ) from exc
        self.port = sock.getsockname()[1]
        self._socket = sock  # closed by uvicorn once it serves; by `_stop` if it never did
        await self.services.hub.start()
        config = uvicorn.Config(
            create_app(self.services),
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=2,  # open event streams do not hold the stop
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="api")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError("the API stopped while starting")
            await asyncio.sleep(0.01)

    async def _stop(self) -> None:
        try:
            if self._server is not None and self._task is not None:
                # Open event streams end first (cleanly, so their clients resume with
                # Last-Event-ID), then the server stops.
                await self.services.hub.end_streams(timeout=STREAMS_END_S)
                self._server.should_exit = True
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        finally:
            if self._socket is not None and self._task is None:
                self._socket.close()
            await self.services.hub.stop()

    async def wait(self) -> None:
        """Return when the server stops by itself."""
        if self._task is not None:
            await asyncio.shield(self._task)
