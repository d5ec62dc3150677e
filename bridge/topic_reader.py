"""Reading what is on a topic right now, without a consumer group (nothing is committed)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from karma.errors import TopicNotFoundError
from karma.kafka_config import client_kwargs
from karma.settings import KafkaSettings

METADATA_WAIT_SECONDS = 10.0
DRAIN_SECONDS = 2.0
EMPTY_POLLS = 2


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    timestamp_ms: int = 0

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"

    def json(self) -> dict[str, Any]:
        assert self.value is not None, f"{self.topic}@{self.position} has no value"
        data: dict[str, Any] = json.loads(self.value)
        return data


async def read_topics(settings: KafkaSettings, topics: Iterable[str]) -> list[Message]:
    """Every message currently on `topics`, partition by partition, in offset order."""
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_kwargs(settings))
    await consumer.start()
    try:
        partitions = []
        for topic in topics:
            numbers = await _partitions(consumer, topic)
            partitions += [TopicPartition(topic, p) for p in sorted(numbers)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        out: list[Message] = []
        # The broker's end offsets can trail what is already readable (seen with tansu):
        # read until they are reached, then on while polls still find records (a poll may
        # come back empty while a large record is on its way: one more is asked for), but
        # for no more than DRAIN_SECONDS (a topic being written to keeps growing).
        loop = asyncio.get_running_loop()
        drain_until: float | None = None
        empty_polls = 0
        while True:
            behind = [tp for tp in partitions if await consumer.position(tp) < end[tp]]
            if not behind and drain_until is None:
                drain_until = loop.time() + DRAIN_SECONDS
            batch = await consumer.getmany(*partitions, timeout_ms=500)
            for records in batch.values():
                out.extend(_message(r) for r in records)
            empty_polls = 0 if batch else empty_polls + 1
            if not behind and (empty_polls >= EMPTY_POLLS or loop.time() > (drain_until or 0)):
                break
        out.sort(key=lambda m: (m.topic, m.partition, m.offset))
        return out
    finally:
        await consumer.stop()


def _message(record: Any) -> Message:
    return Message(
        record.topic,
        record.partition,
        record.offset,
        record.key,
        record.value,
        {k: bytes(v) for k, v in record.headers},
        record.timestamp,
    )


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + METADATA_WAIT_SECONDS
    while True:
        found = consumer.partitions_for_topic(topic)
        if found:
            return set(found)
        if loop.time() > deadline:
            raise TopicNotFoundError(
                f"Kafka topic {topic!r} does not exist (karma setup creates it)"
            )
        # aiokafka has no public way to refresh the metadata partitions_for_topic reads.
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
