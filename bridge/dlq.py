"""The dead-letter queue: messages Karma cannot use, kept with the reason and original bytes.

The record's key and value are the original message's, byte for byte; the reason and where
the message came from travel in headers (`karma.dlq.*`), as Kafka Connect does it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka.errors import MessageSizeTooLargeError
from pydantic import BaseModel, Field

from bridge.inbound import ORIGIN_HEADER, Inbound
from bridge.producer import LazyProducer
from bridge.topic_reader import Message, read_topics
from karma import metrics, names
from karma.component import Component
from karma.errors import FieldError, ValidationError
from karma.settings import KafkaSettings, LimitsSettings

log = logging.getLogger(__name__)

HEADER_PREFIX = "karma.dlq."
REPLAYED_FROM_HEADER = "karma.replayed-from"
LEDGER_STAGE = "ledger"
OBSERVATIONS_STAGE = "observations"
MAX_REASON_CHARS = 2000
MAX_ORIGIN_CHARS = 512
# Room for the headers when a dead letter is as large as the broker allows a message.
HEADROOM_BYTES = 64 * 1024


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
    truncated_from: int | None = Field(
        default=None, description="the original size, when the value kept is only its start"
    )

    def headers(self) -> list[tuple[str, bytes]]:
        fields = {
            "reason": _capped(self.reason, MAX_REASON_CHARS),
            "stage": self.stage,
            "topic": self.topic,
            "partition": str(self.partition),
            "offset": str(self.offset),
            "origin": _capped(self.origin, MAX_ORIGIN_CHARS),
            "ts": self.ts or datetime.now(UTC).isoformat(),
        }
        if self.truncated_from is not None:
            fields["truncated-from"] = str(self.truncated_from)
        return [(HEADER_PREFIX + k, v.encode("utf-8", "replace")) for k, v in fields.items()]

    def truncated(self, size: int) -> DeadLetter:
        """This letter with only the first `size` bytes of its value."""
        value = self.value or b""
        return self.model_copy(update={"value": value[:size], "truncated_from": len(value)})

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
            partition=_number(h.get("partition")),
            offset=_number(h.get("offset")),
            origin=h.get("origin", ""),
            key=message.key,
            value=message.value,
            ts=h.get("ts", ""),
            position=message.position,
            truncated_from=_number(h.get("truncated-from"), None),
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


def _number(text: str | None, default: int | None = -1) -> Any:
    """A header written by someone else may hold anything."""
    try:
        return int(text) if text else default
    except ValueError:
        return default


def _capped(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"… ({len(text):,} characters)"


class DeadLetterPublisher(Component):
    """Publishes dead letters; `send` returns only once Kafka acknowledged the record.

    A letter the broker refuses as too large (its original was as large as the broker
    allows, and the headers add to it) is kept with the start of its value and the original
    size in `karma.dlq.truncated-from`, so even that message cannot block a consumer.
    """

    def __init__(self, settings: KafkaSettings, limits: LimitsSettings | None = None) -> None:
        self.topic = settings.topics.dlq
        limits = limits or LimitsSettings()
        self._keep_bytes = limits.max_message_bytes
        self._producer = LazyProducer(
            settings, max_request_size=4 * limits.max_message_bytes + HEADROOM_BYTES
        )

    async def send(self, letter: DeadLetter) -> None:
        producer = await self._producer.get()
        # As large as the broker allows, then smaller: a letter is never refused for good.
        for keep in (None, self._keep_bytes - HEADROOM_BYTES, 0):
            attempt = letter if keep is None else letter.truncated(max(0, keep))
            if keep == 0:  # the reason and where it came from, at least (a key can be huge)
                attempt = attempt.model_copy(update={"key": None})
            try:
                await producer.send_and_wait(
                    self.topic, key=attempt.key, value=attempt.value, headers=attempt.headers()
                )
            except MessageSizeTooLargeError:
                log.warning(
                    "dead letter from %s@%d too large for Kafka (%d bytes kept)",
                    letter.topic,
                    letter.offset,
                    len(attempt.value or b""),
                )
                continue
            metrics.DEAD_LETTERS.labels(letter.stage or "unknown").inc()
            return
        raise MessageSizeTooLargeError(f"even without its value, {letter.position} is too large")

    async def _stop(self) -> None:
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
        elif letters[position].truncated_from is not None:
            reason = (
                f"the record keeps only the start of a {letters[position].truncated_from:,}"
                "-byte original, which cannot be replayed"
            )
            errors.append(FieldError(field=position, reason=reason))
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
            if letter.stage == LEDGER_STAGE:  # a transition: the sink takes it back
                headers.append((names.TRANSITION_HEADER, b"1"))
            await kafka.send_and_wait(
                letter.topic, key=letter.key, value=letter.value, headers=headers
            )
    finally:
        await producer.stop()
    return chosen
