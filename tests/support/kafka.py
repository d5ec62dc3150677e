"""Reading what is really on the broker, and producing test input."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer

from bridge.dlq import DeadLetter, read_dead_letters
from bridge.topic_reader import Message, read_topics
from karma.kafka_config import producer_kwargs
from karma.settings import KafkaSettings

__all__ = [
    "Message",
    "dead_letters_at",
    "produce",
    "produce_each",
    "read_topics",
    "transitions_on_kafka",
]


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


async def produce(
    settings: KafkaSettings, topic: str, values: list[bytes | None], *, key: bytes | None = b"test"
) -> None:
    """Publish `values` in order to one partition (same key), each acknowledged."""
    producer = AIOKafkaProducer(**producer_kwargs(settings))
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value=value, key=key)
    finally:
        await producer.stop()


async def produce_each(
    settings: KafkaSettings, messages: list[tuple[str, bytes | None]], *, key: bytes | None = None
) -> list[tuple[str, int, int]]:
    """Publish (topic, value) pairs in order, each acknowledged (any size the broker takes);
    return where each landed: (topic, partition, offset)."""
    producer = AIOKafkaProducer(**producer_kwargs(settings), max_request_size=64 * 1024 * 1024)
    await producer.start()
    try:
        positions = []
        for topic, value in messages:
            meta = await producer.send_and_wait(topic, value=value, key=key)
            positions.append((meta.topic, meta.partition, meta.offset))
        return positions
    finally:
        await producer.stop()


async def dead_letters_at(
    settings: KafkaSettings, positions: Iterable[tuple[str, int, int]], *, timeout: float = 60
) -> dict[tuple[str, int, int], list[DeadLetter]]:
    """The dead letters of messages first seen at `positions`, once each of them has one."""
    wanted = set(positions)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found: dict[tuple[str, int, int], list[DeadLetter]] = {p: [] for p in wanted}
        for letter in await read_dead_letters(settings):
            position = (letter.topic, letter.partition, letter.offset)
            if position in found:
                found[position].append(letter)
        if all(found.values()) or loop.time() > deadline:
            return found
        await asyncio.sleep(0.3)
