"""Where streaming actions' items go: a Kafka topic (`actions.stream` by default), one
record per item, key = the action id, value = `{"action_id", "seq", "item"}` and the seq
in the `karma-stream-seq` header. Each batch is sent and acknowledged (acks=all) before
the executor is asked for more: Kafka's pace is the producer's.

`last_seq` reads the action's partition forward from a known offset: after a crash it
finds the items Kafka acknowledged but the workflow never heard of, so the next attempt
resumes after them instead of publishing them twice."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from bridge.producer import LazyProducer
from karma import names
from karma.errors import PermanentError, TransientError
from karma.kafka_config import client_kwargs
from karma.settings import KafkaSettings

READ_TIMEOUT_MS = 300
EMPTY_POLLS = 2
SCAN_TIMEOUT_S = 60.0


class StreamSink:
    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self.topic = settings.topics.stream
        self._producer = LazyProducer(settings)

    async def stop(self) -> None:
        await self._producer.stop()

    async def partition_of(self, action_id: str) -> int:
        """The partition all of an action's items go to (so they stay in order): chosen
        from its id, the same on every worker."""
        producer = await self._producer.get()
        partitions = sorted(await producer.partitions_for(self.topic))
        digest = int(hashlib.sha256(action_id.encode()).hexdigest()[:8], 16)
        return int(partitions[digest % len(partitions)])

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            enable_auto_commit=False, auto_offset_reset="earliest", **client_kwargs(self._settings)
        )

    async def end_offset(self, partition: int) -> int:
        consumer = self._consumer()
        try:
            await consumer.start()
            tp = TopicPartition(self.topic, partition)
            return int((await consumer.end_offsets([tp]))[tp])
        finally:
            await consumer.stop()

    async def publish(
        self, action_id: str, partition: int, first_seq: int, items: Sequence[Any]
    ) -> int:
        """Send items `first_seq`, `first_seq + 1`, … and wait until Kafka acknowledged
        each; the offset after the last."""
        if not items:
            raise ValueError("publish needs items")
        producer = await self._producer.get()
        key = action_id.encode()
        futures = []
        for index, item in enumerate(items):
            seq = first_seq + index
            try:
                value = json.dumps({"action_id": action_id, "seq": seq, "item": item}).encode()
            except (TypeError, ValueError) as exc:
                raise PermanentError(f"item {seq} is not JSON: {exc}") from exc
            headers = [(names.STREAM_SEQ_HEADER, str(seq).encode())]
            futures.append(
                await producer.send(
                    self.topic, value=value, key=key, partition=partition, headers=headers
                )
            )
        offset = -1
        for future in futures:
            offset = max(offset, (await future).offset)
        return offset + 1

    async def acknowledged(self, action_id: str, partition: int, from_offset: int) -> set[int]:
        """The seqs of the action's items at or after `from_offset` (what an attempt that
        crashed had Kafka acknowledge), read up to the end the partition had when asked
        (and a little past it: tansu's end offset can trail what is readable)."""
        consumer = self._consumer()
        tp = TopicPartition(self.topic, partition)
        found: set[int] = set()
        try:
            await consumer.start()
            consumer.assign([tp])
            consumer.seek(tp, from_offset)
            end = int((await consumer.end_offsets([tp]))[tp])
            key = action_id.encode()
            loop = asyncio.get_running_loop()
            give_up = loop.time() + SCAN_TIMEOUT_S
            past_end = 0  # polls after reaching the end (others may go on writing)
            while past_end < EMPTY_POLLS:
                if loop.time() > give_up:
                    raise TransientError(f"reading {self.topic} took over {SCAN_TIMEOUT_S} s")
                batch = await consumer.getmany(tp, timeout_ms=READ_TIMEOUT_MS)
                for record in batch.get(tp, []):
                    if record.key == key and (seq := item_seq(record.value)) is not None:
                        found.add(seq)
                if await consumer.position(tp) >= end:
                    past_end += 1
            return found
        finally:
            await consumer.stop()


def item_seq(value: bytes | None) -> int | None:
    """The seq of one of Karma's item records; None for anything else on the topic (bytes
    that are not JSON, not UTF-8, nested too deep, without an integer seq): the scan looks
    only for Karma's own records and passes over the rest."""
    try:
        seq = json.loads(value or b"")["seq"]
    except (ValueError, TypeError, KeyError, RecursionError, UnicodeDecodeError):
        return None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0 else None
