"""Reading what is really on the broker, and producing test input."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import AIOKafkaProducer

from bridge.topic_reader import Message, read_topics
from karma.kafka_config import producer_kwargs
from karma.settings import KafkaSettings

__all__ = ["Message", "produce", "read_topics", "transitions_on_kafka"]


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
