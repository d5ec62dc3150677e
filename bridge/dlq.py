"""The dead-letter queue: messages Karma cannot use, kept with the reason and original bytes.

The record's key and value are the original message's, byte for byte; the reason and where
the message came from travel in headers (`karma.dlq.*`), as Kafka Connect does it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from bridge.inbound import ORIGIN_HEADER, Inbound
from bridge.producer import LazyProducer
from bridge.topic_reader import Message, read_topics
from karma.errors import FieldError, ValidationError
from karma.settings import KafkaSettings

HEADER_PREFIX = "karma.dlq."
REPLAYED_FROM_HEADER = "karma.replayed-from"


class DeadLetter(BaseModel):
    """Why a message was set aside and where it came from."""

    reason: str
    stage: str
    topic: str
    partition: int
    offset: int
    origin: str = ""
    key: bytes | None = None
    value: bytes | None = None
    ts: str = ""
    position: str = ""  # partition:offset on the DLQ topic, once read back

    def headers(self) -> list[tuple[str, bytes]]:
        fields = {
            "reason": self.reason,
            "stage": self.stage,
            "topic": self.topic,
            "partition": str(self.partition),
            "offset": str(self.offset),
            "origin": self.origin,
            "ts": self.ts or datetime.now(UTC).isoformat(),
        }
        return [(HEADER_PREFIX + k, v.encode()) for k, v in fields.items()]

    @classmethod
    def from_message(cls, message: Message) -> DeadLetter:
        """Read back from the DLQ topic."""
        h = {
            k.removeprefix(HEADER_PREFIX): v.decode("utf-8", "replace")
            for k, v in message.headers.items()
            if k.startswith(HEADER_PREFIX)
        }
        return cls(
            reason=h.get("reason", "(no reason recorded)"),
            stage=h.get("stage", ""),
            topic=h.get("topic", ""),
            partition=int(h.get("partition") or -1),
            offset=int(h.get("offset") or -1),
            origin=h.get("origin", ""),
            key=message.key,
            value=message.value,
            ts=h.get("ts", ""),
            position=message.position,
        )

    @classmethod
    def from_record(cls, record: Any, *, reason: str, stage: str) -> DeadLetter:
        """From an aiokafka ConsumerRecord."""
        return cls(
            reason=reason,
            stage=stage,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            origin=Inbound.from_record(record).origin,
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


async def read_dead_letters(settings: KafkaSettings) -> list[DeadLetter]:
    """Every record on the DLQ topic, oldest first per partition."""
    return [DeadLetter.from_message(m) for m in await read_topics(settings, [settings.topics.dlq])]


async def replay(settings: KafkaSettings, positions: Sequence[str]) -> list[DeadLetter]:
    """Publish the chosen dead letters' original bytes to their original topics again.

    A replayed message carries its first position (`karma.origin`), so a request without
    an idempotency key still maps to the action id it would have had, and replaying the
    same letter twice starts one action.

    Raises:
        karma.errors.ValidationError: a position is malformed or not on the DLQ.
    """
    letters = {letter.position: letter for letter in await read_dead_letters(settings)}
    errors = []
    for position in positions:
        partition, sep, offset = position.partition(":")
        if not (sep and partition.isdigit() and offset.isdigit()):
            errors.append(FieldError(field=position, reason="expected PARTITION:OFFSET"))
        elif position not in letters:
            errors.append(
                FieldError(field=position, reason=f"no record there on {settings.topics.dlq}")
            )
        elif not letters[position].topic:
            errors.append(FieldError(field=position, reason="the record names no source topic"))
    if errors:
        raise ValidationError(errors)
    chosen = [letters[p] for p in dict.fromkeys(positions)]
    producer = LazyProducer(settings)
    try:
        kafka = await producer.get()
        for letter in chosen:
            headers = [
                (
                    ORIGIN_HEADER,
                    (
                        letter.origin or f"kafka:{letter.topic}:{letter.partition}:{letter.offset}"
                    ).encode(),
                ),
                (REPLAYED_FROM_HEADER, f"{settings.topics.dlq}:{letter.position}".encode()),
            ]
            await kafka.send_and_wait(
                letter.topic, key=letter.key, value=letter.value, headers=headers
            )
    finally:
        await producer.stop()
    return chosen
