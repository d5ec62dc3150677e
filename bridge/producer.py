"""A Kafka producer shared by the bridge's publishers, started on first use."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer

from karma.kafka_config import producer_kwargs
from karma.settings import KafkaSettings


class LazyProducer:
    """Starts the producer when first needed, so a broker that is down at start-up only
    delays publishing instead of stopping the process."""

    def __init__(self, settings: KafkaSettings, **overrides: Any) -> None:
        self._settings = settings
        self._overrides = overrides
        self._producer: Any = None
        self._lock = asyncio.Lock()

    async def get(self) -> Any:
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(**producer_kwargs(self._settings), **self._overrides)
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def stop(self) -> None:
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
