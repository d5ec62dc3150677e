"""The ingress consumer on the real broker: retries what may pass, commits only what was
handled, dead-letters what cannot be used, keeps partition order."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition
from temporalio.service import RPCError, RPCStatusCode

from bridge.dlq import DeadLetterPublisher, read_dead_letters
from bridge.inbound import Inbound
from bridge.ingress_consumer import IngressConsumer, Unusable
from bridge.topics import ensure_topics
from karma.kafka_config import client_kwargs
from karma.settings import KafkaSettings, KafkaTopics
from tests.conftest import unique
from tests.support.kafka import produce
from workers.embedded import EmbeddedKarma


async def committed(kafka: KafkaSettings, group: str, topic: str) -> int | None:
    consumer = AIOKafkaConsumer(group_id=group, enable_auto_commit=False, **client_kwargs(kafka))
    await consumer.start()
    try:
        return await consumer.committed(TopicPartition(topic, 0))
    finally:
        await consumer.stop()


async def test_a_message_is_retried_until_temporal_answers_then_committed(
    karma: EmbeddedKarma,
) -> None:
    topic = unique("ingress-test")
    kafka = karma.settings.kafka.model_copy(
        update={
            "topic_partitions": 1,
            "topics": KafkaTopics(requested=topic, dlq=karma.settings.kafka.topics.dlq),
        }
    )
    await ensure_topics(kafka)
    seen: list[str] = []
    unavailable = 2
    last = asyncio.Event()

    async def handler(message: Inbound) -> None:
        nonlocal unavailable
        text = (message.value or b"").decode()
        seen.append(text)
        if text == "flaky" and unavailable:
            unavailable -= 1
            raise RPCError("server unavailable", RPCStatusCode.UNAVAILABLE, b"")
        if text == "bad":
            raise Unusable(f"cannot use {topic}")
        if text == "two":
            last.set()

    group = unique("group")
    dlq = DeadLetterPublisher(kafka)
    consumer = IngressConsumer(
        name="ingress.test",
        topic=topic,
        group=group,
        kafka=kafka,
        dlq=dlq,
        handler=handler,
        max_records=10,
    )
    await produce(kafka, topic, [b"one", b"flaky", b"bad", b"two"])
    await consumer.start()
    try:
        await asyncio.wait_for(last.wait(), 60)
    finally:  # stopping lets the message in hand finish and commits it
        await consumer.stop()
        await dlq.stop()
    # In order; the unavailable one retried (never skipped) before the next was handled.
    assert seen == ["one", "flaky", "flaky", "flaky", "bad", "two"]
    assert (consumer.handled, consumer.dead_lettered) == (3, 1)
    assert await committed(kafka, group, topic) == 4
    letters = [d for d in await read_dead_letters(kafka) if d.topic == topic]
    assert [(d.value, d.reason, d.offset) for d in letters] == [(b"bad", f"cannot use {topic}", 2)]
