"""Reading what is really on the broker (no consumer group, from the first offset)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from karma.settings import KafkaSettings


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]

    def json(self) -> dict[str, Any]:
        assert self.value is not None
        data: dict[str, Any] = json.loads(self.value)
        return data


async def read_topics(settings: KafkaSettings, topics: Iterable[str]) -> list[Message]:
    """Every message currently on `topics`, in partition order."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = []
        for topic in topics:
            numbers = consumer.partitions_for_topic(topic) or await _partitions(consumer, topic)
            partitions += [TopicPartition(topic, p) for p in sorted(numbers)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        out: list[Message] = []
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            batch = await consumer.getmany(*partitions, timeout_ms=500)
            for records in batch.values():
                out.extend(
                    Message(r.topic, r.partition, r.offset, r.key, r.value, dict(r.headers))
                    for r in records
                )
        return out
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(50):
        await consumer._client.force_metadata_update()
        found = consumer.partitions_for_topic(topic)
        if found:
            return set(found)
        await asyncio.sleep(0.1)
    raise AssertionError(f"topic {topic} has no partitions")


async def transitions_on_kafka(
    settings: KafkaSettings, action_ids: Iterable[str]
) -> dict[str, list[Message]]:
    """Transition messages per action, in broker order within each topic."""
    wanted = set(action_ids)
    topics = [settings.topics.requested, settings.topics.progress, settings.topics.result]
    per_action: dict[str, list[Message]] = {a: [] for a in wanted}
    for message in await read_topics(settings, topics):
        if message.key is not None and message.key.decode() in wanted:
            per_action[message.key.decode()].append(message)
    return per_action


async def produce(settings: KafkaSettings, topic: str, values: list[bytes | None]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", enable_idempotence=False
    )
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value=value, key=b"test")
    finally:
        await producer.stop()
