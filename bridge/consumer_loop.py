"""The consumer-group loop under the ledger sink and the ingress: one task calls `_step`
until the loop is stopped; offsets are committed only through `commit`, after what they
cover was handled; a rebalance never ends the loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from karma.component import Component
from karma.kafka_config import client_kwargs
from karma.settings import KafkaSettings

log = logging.getLogger(__name__)


class ConsumerLoop(Component):
    """Subclasses implement `_step` (fetch and handle once) and may refine `_settle`
    (what happens to work in hand on stop) and `_listener` (rebalance callbacks)."""

    def __init__(self, name: str, topics: list[str], *, group: str, kafka: KafkaSettings) -> None:
        self.name = name
        self._topics = topics
        self._group = group
        self._kafka_settings = kafka
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def kafka(self) -> AIOKafkaConsumer:
        assert self._consumer is not None, "start() creates the consumer"
        return self._consumer

    async def _start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            group_id=self._group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **client_kwargs(self._kafka_settings),
        )
        await self._consumer.start()
        self._consumer.subscribe(self._topics, listener=self._listener())
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            await self._step()

    async def _step(self) -> None:
        raise NotImplementedError

    def _listener(self) -> Any:
        """An aiokafka ConsumerRebalanceListener, or None."""
        return None

    async def _stop(self) -> None:
        self._stopping.set()
        try:
            if self._task is not None:
                await self._settle(self._task)
        finally:  # even if the loop had died of an error
            if self._consumer is not None:
                await self._consumer.stop()

    async def _settle(self, task: asyncio.Task[None]) -> None:
        """Let the loop finish what it is doing (by default: wait for it)."""
        await task

    async def wait(self) -> None:
        """Return when the loop stops by itself; cancelling the wait leaves it running."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def commit(self, offsets: dict[TopicPartition, int]) -> bool:
        """Commit; False when the group rebalanced meanwhile (the new owner handles those
        records again, which the ledger and the ingress tolerate)."""
        if not offsets:
            return True
        try:
            await self.kafka.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("%s: offset commit failed after a rebalance: %s", self.name, exc)
            return False
        return True


async def group_lag(kafka: KafkaSettings, group: str, topics: Sequence[str]) -> int:
    """How far a consumer group (maybe in another process) is behind the end offsets of
    `topics` (as far as the broker's end offsets tell: they can trail what is readable)."""
    consumer = AIOKafkaConsumer(group_id=group, enable_auto_commit=False, **client_kwargs(kafka))
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            return 0
        ends = await consumer.end_offsets(partitions)
        behind = 0
        for tp in partitions:
            behind += max(0, ends[tp] - (await consumer.committed(tp) or 0))
        return behind
    finally:
        await consumer.stop()


async def group_caught_up(
    kafka: KafkaSettings, group: str, topics: Sequence[str], timeout: float
) -> bool:
    """Wait until `group` has committed what is on `topics` now; False if not in time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await group_lag(kafka, group, topics) > 0:
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.5)
    return True
