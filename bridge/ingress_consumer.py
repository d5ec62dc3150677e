"""A consumer group that hands each message to a handler and commits only what was handled.

Messages of one partition are handled one after the other (callbacks about one action keep
their order); partitions are handled concurrently. A handler either succeeds, rejects the
message (`Unusable`: it goes to the DLQ with the reason and the original bytes) or fails
for a reason that may pass (Temporal or Kafka unreachable): then the same message is tried
again until it works or the consumer stops. An offset is committed only after its message
was handled or dead-lettered, so a crash re-reads rather than loses.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from temporalio.service import RPCError, RPCStatusCode

from bridge.dlq import DeadLetter, DeadLetterPublisher
from bridge.inbound import Inbound
from bridge.retrying import Stopped, until_stopped
from karma.errors import ValidationError
from karma.kafka_config import client_kwargs
from karma.settings import KafkaSettings

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 2.0

Handler = Callable[[Inbound], Awaitable[None]]

# Temporal answers these while it is unavailable or overloaded: try the message again.
PASSING_RPC_STATUSES = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.ABORTED,
    }
)
# UNKNOWN may be a network hiccup or a refusal that will never change: retried a few times.
UNKNOWN_ATTEMPTS = 5


class Unusable(Exception):
    """The message cannot be used as it is; it goes to the DLQ with this reason."""


class _Passing(Exception):
    """A failure that may pass: handle the same message again later."""


class IngressConsumer:
    """Consumes one topic in one consumer group through `handler`."""

    def __init__(
        self,
        *,
        name: str,
        topic: str,
        group: str,
        kafka: KafkaSettings,
        dlq: DeadLetterPublisher,
        handler: Handler,
        max_records: int,
    ) -> None:
        self.name = name
        self._handler = handler
        self._dlq = dlq
        self._max_records = max_records
        self._consumer = AIOKafkaConsumer(
            topic,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **client_kwargs(kafka),
        )
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.handled = 0
        self.dead_lettered = 0
        self._unknown: dict[tuple[str, int, int], int] = {}

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Let the message in hand finish for a moment, then abandon it uncommitted (it is
        handled again on the next start, which starts and signals tolerate)."""
        self._stopping.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=STOP_GRACE_SECONDS)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def wait(self) -> None:
        """Return when the consumer stops by itself; cancelling the wait leaves it running."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            fetched = await self._consumer.getmany(timeout_ms=500, max_records=self._max_records)
            await asyncio.gather(*(self._partition(tp, records) for tp, records in fetched.items()))

    async def _partition(self, tp: TopicPartition, records: list[Any]) -> None:
        done = None
        for record in records:
            outcome = await until_stopped(
                f"{self.name}: handle {tp.topic}@{tp.partition}:{record.offset}",
                functools.partial(self._handle, record),
                self._stopping,
                (_Passing, KafkaError, OSError),
            )
            if isinstance(outcome, Stopped):
                break
            done = record.offset
        if done is None:
            return
        try:
            await self._consumer.commit({tp: done + 1})
        except CommitFailedError as exc:
            # The group rebalanced: the partition's new owner handles these again, which
            # is harmless (starts and signals are idempotent).
            log.warning("%s: offset commit failed after a rebalance: %s", self.name, exc)

    async def _handle(self, record: Any) -> None:
        try:
            await self._handler(Inbound.from_record(record))
        except (Unusable, ValidationError) as exc:
            await self._dead_letter(record, str(exc))
        except RPCError as exc:
            position = (record.topic, record.partition, record.offset)
            if exc.status is RPCStatusCode.UNKNOWN:
                self._unknown[position] = self._unknown.get(position, 0) + 1
            if exc.status in PASSING_RPC_STATUSES or (
                exc.status is RPCStatusCode.UNKNOWN and self._unknown[position] < UNKNOWN_ATTEMPTS
            ):
                raise _Passing(f"Temporal: {exc}") from exc
            self._unknown.pop(position, None)
            await self._dead_letter(record, f"Temporal refused it: {exc}")
        except (_Passing, KafkaError, OSError, asyncio.CancelledError):
            raise
        except Exception as exc:
            # A defect, not a passing condition: set the message aside rather than block
            # the partition forever; the DLQ keeps its bytes for a replay after the fix.
            log.exception("%s: unexpected error handling offset %d", self.name, record.offset)
            await self._dead_letter(record, f"unexpected error: {exc!r}")
        else:
            self._unknown.pop((record.topic, record.partition, record.offset), None)
            self.handled += 1

    async def _dead_letter(self, record: Any, reason: str) -> None:
        letter = DeadLetter.from_record(record, reason=reason, stage=self.name)
        log.warning("dead letter from %s@%d: %s", letter.topic, letter.offset, reason)
        await self._dlq.send(letter)
        self.dead_lettered += 1
