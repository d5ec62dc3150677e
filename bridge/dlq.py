"""The dead-letter queue: messages Karma cannot use, kept with the reason and original bytes.

The record's key and value are the original message's, byte for byte; the reason and where
the message came from travel in headers (`karma.dlq.*`), as Kafka Connect does it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from bridge.producer import LazyProducer
from karma.settings import KafkaSettings

HEADER_PREFIX = "karma.dlq."


class DeadLetter(BaseModel):
    """Why a message was set aside and where it came from."""

    reason: str
    stage: str
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = None

    def headers(self) -> list[tuple[str, bytes]]:
        fields = {
            "reason": self.reason,
            "stage": self.stage,
            "topic": self.topic,
            "partition": str(self.partition),
            "offset": str(self.offset),
            "ts": datetime.now(UTC).isoformat(),
        }
        return [(HEADER_PREFIX + k, v.encode()) for k, v in fields.items()]

    @classmethod
    def from_record(cls, record: Any, *, reason: str, stage: str) -> DeadLetter:
        """From an aiokafka ConsumerRecord."""
        return cls(
            reason=reason,
            stage=stage,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
        )


class DeadLetterPublisher:
    """Publishes dead letters; `send` returns only once Kafka acknowledged the record."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.topic = settings.topics.dlq
        self._producer = LazyProducer(settings)

    async def send(self, letter: DeadLetter) -> None:
        producer = await self._producer.get()
        await producer.send_and_wait(
            self.topic, key=letter.key, value=letter.value, headers=letter.headers()
        )

    async def stop(self) -> None:
        await self._producer.stop()
