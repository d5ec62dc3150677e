"""Starting the embedded servers together, on the addresses the settings name."""

from __future__ import annotations

import asyncio
from pathlib import Path

from karma.component import Component
from karma.embedded.kafka_broker import TansuBroker
from karma.embedded.process import free_port, port_is_open
from karma.embedded.temporal_server import TemporalDevServer
from karma.settings import Settings


def _host_port(address: str, setting: str) -> tuple[str, int]:
    host, sep, port = address.split(",")[0].strip().rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{setting}: expected host:port, got {address!r}")
    return host or "127.0.0.1", int(port)


class EmbeddedServers(Component):
    """The Temporal dev server and the tansu broker as child processes.

    Args:
        settings: addresses come from `temporal.address`, `temporal.ui_port` and
            `kafka.bootstrap_servers`; logs and the SQLite file go under `data_dir`.
        persistent: keep Temporal's state in `<data_dir>/temporal.db` (else in memory).
    """

    def __init__(self, settings: Settings, *, persistent: bool = True) -> None:
        self.settings = settings
        data_dir = settings.data_dir.resolve()
        host, port = _host_port(settings.temporal.address, "KARMA_TEMPORAL__ADDRESS")
        kafka_host, kafka_port = _host_port(
            settings.kafka.bootstrap_servers, "KARMA_KAFKA__BOOTSTRAP_SERVERS"
        )
        self.temporal = TemporalDevServer(
            host=host,
            port=port,
            ui_port=settings.temporal.ui_port,
            db_file=data_dir / "temporal.db" if persistent else None,
            log_path=data_dir / "logs" / "temporal.log",
            namespace=settings.temporal.namespace,
            codec_endpoint=codec_endpoint(settings),
        )
        self.kafka = TansuBroker(
            host=kafka_host, port=kafka_port, log_path=data_dir / "logs" / "tansu.log"
        )

    async def _start(self) -> None:
        for name, host, port in (
            ("Temporal", self.temporal.host, self.temporal.port),
            ("Temporal Web UI", self.temporal.host, self.temporal.ui_port),
            ("Kafka", self.kafka.host, self.kafka.port),
        ):
            if port_is_open(host, port):
                raise RuntimeError(
                    f"{name} port {host}:{port} is already in use; is another `karma dev` "
                    "running? Choose other ports with KARMA_TEMPORAL__ADDRESS, "
                    "KARMA_TEMPORAL__UI_PORT and KARMA_KAFKA__BOOTSTRAP_SERVERS."
                )
        self.kafka.process.start()
        await self.temporal.start()
        await self.kafka.start_wait()

    async def _stop(self) -> None:
        # Blocking waits for the processes to exit: off the event loop.
        await asyncio.to_thread(self.temporal.stop)
        await asyncio.to_thread(self.kafka.stop)

    def pids(self) -> dict[str, int | None]:
        return {"temporal": self.temporal.process.pid, "kafka": self.kafka.process.pid}


def with_free_ports(settings: Settings, data_dir: Path) -> Settings:
    """A copy of `settings` on free local ports with its data under `data_dir`, so a
    throw-away stack never collides with a running `karma dev`."""
    temporal = settings.temporal.model_copy(
        update={"address": f"127.0.0.1:{free_port()}", "ui_port": free_port()}
    )
    kafka = settings.kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}"})
    clickhouse = settings.clickhouse.model_copy(update={"dsn": None})
    api = settings.api.model_copy(update={"port": free_port()})
    return settings.model_copy(
        update={
            "data_dir": data_dir,
            "temporal": temporal,
            "kafka": kafka,
            "clickhouse": clickhouse,
            "api": api,
        }
    )


def codec_endpoint(settings: Settings) -> str:
    """Where the Web UI decodes payloads: the API's `/codec` (when the API is served)."""
    api = settings.api
    return f"{api.url()}/codec" if api.enabled and api.port else ""
