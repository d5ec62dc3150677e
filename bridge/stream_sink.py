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
from karma.kafka_config import client_kwargs
from karma.settings import KafkaSettings

READ_TIMEOUT_MS = 300
EMPTY_POLLS = 2


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

    async def end_offset(self, partition: int) -> int:
        consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_kwargs(self._settings))
        await consumer.start()
        try:
            tp = TopicPartition(self.topic, partition)
            return int((await consumer.end_offsets([tp]))[tp])
        finally:
            await consumer.stop()

    async def publish(
        self, action_id: str, partition: int, first_seq: int, items: Sequence[Any]
    ) -> int:
        """Send items `first_seq`, `first_seq + 1`, … and wait until Kafka acknowledged
        each; the offset after the last."""
        producer = await self._producer.get()
        key = action_id.encode()
        futures = []
        for index, item in enumerate(items):
            seq = first_seq + index
            value = json.dumps({"action_id": action_id, "seq": seq, "item": item}).encode()
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

    async def last_seq(self, action_id: str, partition: int, from_offset: int) -> int | None:
        """The highest seq of the action's items at or after `from_offset` (None: none)."""
        consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_kwargs(self._settings))
        await consumer.start()
        tp = TopicPartition(self.topic, partition)
        try:
            consumer.assign([tp])
            consumer.seek(tp, from_offset)
            end = int((await consumer.end_offsets([tp]))[tp])
            key = action_id.encode()
            found: int | None = None
            empty = 0
            # The end offset can trail what is readable (tansu): read on while polls find
            # records, and at least up to the end offset.
            while True:
                batch = await consumer.getmany(tp, timeout_ms=READ_TIMEOUT_MS)
                records = batch.get(tp, [])
                for record in records:
                    if record.key == key:
                        found = max(found or 0, int(json.loads(record.value)["seq"]))
                empty = 0 if records else empty + 1
                if empty >= EMPTY_POLLS and await consumer.position(tp) >= end:
                    return found
                await asyncio.sleep(0)
        finally:
            await consumer.stop()
