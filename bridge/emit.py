"""Publishing transitions to Kafka: keyed by action id, acknowledged by all replicas.

The publisher never gives up on its own: it reports how far Kafka acknowledged a batch and
leaves the rest to the caller (the workflow keeps unacknowledged transitions in its outbox
and retries them through the `emit_transitions` activity).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from aiokafka.errors import KafkaError

from bridge.producer import LazyProducer
from karma import metrics, names
from karma.component import Component
from karma.envelope import Transition
from karma.lifecycle import TopicKind
from karma.settings import KafkaSettings
from karma.telemetry import tracer

log = logging.getLogger(__name__)


class TransitionPublisher(Component):
    """A long-lived Kafka producer for transitions, started lazily and restarted on failure."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._producer = LazyProducer(settings)
        self._topics = {
            TopicKind.REQUESTED: settings.topics.requested,
            TopicKind.PROGRESS: settings.topics.progress,
            TopicKind.RESULT: settings.topics.result,
        }

    def topic_for(self, event: Transition) -> str:
        return self._topics[event.event_type.topic_kind]

    async def _start(self) -> None:
        """Connect now if the broker is there; an unreachable broker is retried on publish."""
        try:
            await self._producer.get()
        except Exception as exc:  # noqa: BLE001 - any connection failure means "later"
            log.warning("Kafka not reachable yet (%s); transitions wait in the outbox", exc)

    async def _stop(self) -> None:
        await self._producer.stop()

    async def publish(self, events: Sequence[Transition], *, timeout: float) -> int:
        """Send `events` (one action, seq order) and return the highest seq acknowledged
        with every earlier one; 0 when none was."""
        if not events:
            return 0
        try:
            return await asyncio.wait_for(self._publish(events), timeout)
        except (TimeoutError, OSError, KafkaError) as exc:
            log.warning("publishing %d transitions failed: %r", len(events), exc)
            return 0

    async def _publish(self, events: Sequence[Transition]) -> int:
        attributes: dict[str, str | int] = {
            "messaging.system": "kafka",
            "messaging.operation": "publish",
            "messaging.batch.message_count": len(events),
            "karma.action_id": events[0].action_id,
            "karma.seq": f"{events[0].seq}-{events[-1].seq}",
        }
        with tracer().start_as_current_span("kafka.publish transitions", attributes=attributes):
            acknowledged = await self._send(events)
        now = datetime.now(UTC)
        for event in events:
            if event.seq <= acknowledged:
                metrics.EMIT_LATENCY.observe(max(0.0, (now - event.ts).total_seconds()))
        return acknowledged

    async def _send(self, events: Sequence[Transition]) -> int:
        producer = await self._producer.get()
        futures = []
        for event in events:
            futures.append(
                await producer.send(
                    self.topic_for(event),
                    key=event.action_id.encode(),
                    value=event.model_dump_json().encode(),
                    headers=[
                        (names.TRANSITION_HEADER, b"1"),
                        ("event_id", event.event_id.encode()),
                        ("event_type", event.event_type.value.encode()),
                        ("source", event.source.system.encode()),
                    ],
                )
            )
        results = await asyncio.gather(*futures, return_exceptions=True)
        acked = 0
        for event, result in zip(events, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("Kafka refused %s: %r", event.event_id, result)
                break
            acked = event.seq
        return acked
