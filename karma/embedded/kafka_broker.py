"""The tansu broker: Kafka-compatible, in memory (no idempotent producer)."""

from __future__ import annotations

from pathlib import Path

from karma.embedded.binaries import tansu_binary
from karma.embedded.process import ChildProcess, port_is_open

START_TIMEOUT = 30.0


class TansuBroker:
    def __init__(self, *, host: str, port: int, log_path: Path) -> None:
        self.host, self.port = host, port
        url = f"tcp://{host}:{port}"
        argv = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        self.process = ChildProcess("tansu broker", argv, log_path)

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        self.process.start()
        await self.start_wait()

    async def start_wait(self) -> None:
        """Wait for a broker already started (lets it boot while Temporal does)."""
        await self.process.wait_ready(self._ready, timeout=START_TIMEOUT, what="port open")

    def stop(self) -> None:
        self.process.stop()

    async def _ready(self) -> bool:
        return port_is_open(self.host, self.port)
