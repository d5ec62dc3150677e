"""The ledger sink: a Kafka consumer group writing transitions into ClickHouse in batches.

Offsets are committed only after ClickHouse accepted the batch (and the dead letters of the
batch were acknowledged), so a crash at any point re-reads rather than loses; the ledger
skips event ids it already holds, so re-reading never duplicates.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from clickhouse_connect.driver.exceptions import ClickHouseError

from bridge.decode import claims_to_be_transition, decode_transition
from bridge.dlq import DeadLetter, DeadLetterPublisher
from bridge.ledger import KafkaPosition, Ledger, ledger_row
from bridge.retrying import Stopped, until_stopped
from karma.errors import ValidationError
from karma.kafka_config import client_kwargs
from karma.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRYABLE = (OSError, KafkaError, ClickHouseError)


class LedgerSink:
    """Consumes the transition topics and writes them to the ledger."""

    def __init__(self, settings: Settings, dlq: DeadLetterPublisher) -> None:
        self._settings = settings
        self._ledger: Ledger | None = None
        self._dlq = dlq
        # The ClickHouse client is blocking: one thread makes all of the sink's calls.
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        topics = settings.kafka.topics
        self._consumer = AIOKafkaConsumer(
            topics.requested,
            topics.progress,
            topics.result,
            group_id=settings.bridge.consumer_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **client_kwargs(settings.kafka),
        )
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batches_written = 0

    async def start(self) -> None:
        """Open the ledger (creating its schema if needed), then join the consumer group."""
        clickhouse = self._settings.clickhouse
        self._ledger = await self._in_db(
            Ledger.open, self._settings.clickhouse_dsn, clickhouse.database
        )
        await self._in_db(self._ledger.ensure_schema)
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="ledger-sink")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
        await self._consumer.stop()
        if self._ledger is not None:
            await self._in_db(self._ledger.close)
            self._ledger = None
        self._db.shutdown(wait=True)

    async def wait(self) -> None:
        """Return when the sink stops by itself; cancelling the wait leaves it running."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            batch = await self._next_batch()
            if batch and not await self._write(batch):
                return

    async def _next_batch(self) -> list[Any]:
        """Wait for records, then keep collecting until the batch is full or old enough."""
        bridge = self._settings.bridge
        records: list[Any] = []
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        while len(records) < bridge.batch_max_rows and not self._stopping.is_set():
            wait = 0.5 if deadline is None else deadline - loop.time()
            if wait <= 0:
                break
            fetched = await self._consumer.getmany(
                timeout_ms=int(wait * 1000), max_records=bridge.batch_max_rows - len(records)
            )
            for partition_records in fetched.values():
                records.extend(partition_records)
            if records and deadline is None:
                deadline = loop.time() + bridge.batch_max_seconds
        return records

    async def _write(self, records: list[Any]) -> bool:
        """Write one batch; False if the sink was stopped before the batch was stored."""
        assert self._ledger is not None, "start() opens the ledger"
        ledger = self._ledger
        rows, letters = [], []
        for record in records:
            try:
                event = decode_transition(record.value)
            except ValidationError as exc:
                if self._ingress_judges(record):
                    continue
                letters.append(DeadLetter.from_record(record, reason=str(exc), stage="ledger"))
                continue
            if event is not None:
                position = KafkaPosition(record.topic, record.partition, record.offset)
                rows.append(ledger_row(event, position))
        written = await self._retry("write to ClickHouse", lambda: self._in_db(ledger.write, rows))
        if isinstance(written, Stopped):
            return False
        for letter in letters:
            log.warning("dead letter from %s@%d: %s", letter.topic, letter.offset, letter.reason)
            sent = await self._retry("publish a dead letter", lambda: self._dlq.send(letter))  # noqa: B023
            if isinstance(sent, Stopped):
                return False
        await self._commit(records)
        self.batches_written += 1
        log.info(
            "ledger batch committed: %d records, %d new rows, %d dead letters",
            len(records),
            written,
            len(letters),
        )
        return True

    def _ingress_judges(self, record: Any) -> bool:
        """Unusable requests on `actions.requested` are the ingress's to dead-letter (once);
        the sink only dead-letters what claims to be one of Karma's transitions."""
        return (
            self._settings.ingress.enabled
            and record.topic == self._settings.kafka.topics.requested
            and not claims_to_be_transition(record.value)
        )

    async def _commit(self, records: list[Any]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group rebalanced; the new owner re-reads these records and the ledger
            # skips what it already holds.
            log.warning("offset commit failed after a rebalance: %s", exc)

    async def _in_db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    async def _retry(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T | Stopped:
        return await until_stopped(what, attempt, self._stopping, RETRYABLE)
