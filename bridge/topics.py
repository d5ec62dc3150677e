"""Creating Karma's Kafka topics when they are missing."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from karma.kafka_config import client_kwargs
from karma.settings import KafkaSettings

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36


async def ensure_topics(settings: KafkaSettings) -> list[str]:
    """Create every configured topic that does not exist yet; return the ones created."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in settings.topics.all() if t not in existing]
        if not missing:
            return []
        response = await admin.create_topics(
            [
                NewTopic(
                    name=topic,
                    num_partitions=settings.topic_partitions,
                    replication_factor=settings.topic_replication_factor,
                )
                for topic in missing
            ]
        )
        for topic, code, message in _errors(response):
            if code not in (0, TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"creating Kafka topic {topic!r} failed: {code} {message}")
        log.info("created Kafka topics %s", ", ".join(missing))
        return missing
    finally:
        await admin.close()


def _errors(response: object) -> list[tuple[str, int, str | None]]:
    return [(e[0], e[1], e[2] if len(e) > 2 else None) for e in response.topic_errors]  # type: ignore[attr-defined]
