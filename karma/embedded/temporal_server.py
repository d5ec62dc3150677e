"""The Temporal dev server (`temporal server start-dev`) with Karma's search attributes."""

from __future__ import annotations

from pathlib import Path

from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError

from karma import search_attributes
from karma.embedded.binaries import temporal_binary
from karma.embedded.process import ChildProcess, port_is_open

START_TIMEOUT = 60.0


class TemporalDevServer:
    """A dev server on `host:port` with the Web UI on `ui_port`.

    `db_file` keeps workflow state in SQLite across restarts; None keeps it in memory.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        ui_port: int,
        db_file: Path | None,
        log_path: Path,
        namespace: str = "default",
        codec_endpoint: str = "",
    ) -> None:
        self.host, self.port, self.ui_port = host, port, ui_port
        self.namespace = namespace
        argv = [
            str(temporal_binary()),
            "server",
            "start-dev",
            "--ip",
            host,
            "--port",
            str(port),
            "--ui-port",
            str(ui_port),
            "--ui-disable-news-fetch",
            "--log-level",
            "warn",
        ]
        if namespace != "default":
            argv += ["--namespace", namespace]
        if codec_endpoint:  # the Web UI decodes payloads through Karma's API
            argv += ["--ui-codec-endpoint", codec_endpoint]
        if db_file is not None:
            db_file.parent.mkdir(parents=True, exist_ok=True)
            argv += ["--db-filename", str(db_file), "--sqlite-pragma", "journal_mode=wal"]
        for key in search_attributes.ALL:
            argv += ["--search-attribute", f"{key.name}=Keyword"]
        self.process = ChildProcess("temporal dev server", argv, log_path)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.ui_port}"

    async def start(self) -> None:
        self.process.start()
        await self.process.wait_ready(
            self._ready, timeout=START_TIMEOUT, what="Karma's search attributes registered"
        )

    def stop(self) -> None:
        self.process.stop()

    async def _ready(self) -> bool:
        if not port_is_open(self.host, self.port):
            return False
        try:
            client = await Client.connect(self.address, namespace=self.namespace)
            response = await client.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace=self.namespace)
            )
        except (RPCError, RuntimeError):
            return False
        return all(key.name in response.custom_attributes for key in search_attributes.ALL)
