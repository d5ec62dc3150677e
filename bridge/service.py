"""The bridge process: Kafka topics, the ClickHouse schema and the ledger sink."""

from __future__ import annotations

import logging
from types import TracebackType

from bridge.dlq import DeadLetterPublisher
from bridge.sink import LedgerSink
from bridge.topics import ensure_topics
from karma.settings import Settings

log = logging.getLogger(__name__)


class Bridge:
    """Creates missing topics and the ledger schema, then runs the ledger sink.

    With embedded chdb the bridge must live in the process that owns the data path.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._dlq = DeadLetterPublisher(settings.kafka)
        self._sink: LedgerSink | None = None

    async def start(self) -> None:
        await ensure_topics(self._settings.kafka)
        self._sink = LedgerSink(self._settings, self._dlq)
        await self._sink.start()
        log.info("bridge running: ledger %s", self._settings.clickhouse.database)

    async def stop(self) -> None:
        if self._sink is not None:
            await self._sink.stop()
            self._sink = None
        await self._dlq.stop()

    async def wait(self) -> None:
        if self._sink is not None:
            await self._sink.wait()

    async def __aenter__(self) -> Bridge:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
