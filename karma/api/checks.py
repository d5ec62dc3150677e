"""What `/readyz` asks: can this process reach Temporal, Kafka and ClickHouse?"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka.client import AIOKafkaClient

from karma.api.app import Check
from karma.client import KarmaClient
from karma.kafka_config import client_kwargs
from karma.settings import Settings


def standard_checks(
    settings: Settings, client: KarmaClient, ledger_ping: Callable[[], object] | None
) -> dict[str, Check]:
    async def temporal() -> str:
        if not await client.temporal.service_client.check_health():
            raise RuntimeError("the server answered that it is not serving")
        return f"{settings.temporal.address}, namespace {settings.temporal.namespace}"

    async def kafka() -> str:
        kafka_client = AIOKafkaClient(**client_kwargs(settings.kafka))
        try:
            await kafka_client.bootstrap()
            topics = settings.kafka.topics
            wanted = [topics.requested, topics.progress, topics.result, topics.dlq]
            missing = [t for t in wanted if t not in kafka_client.cluster.topics()]
            if missing:
                raise RuntimeError(f"topics missing: {', '.join(missing)} (karma setup)")
            return f"{settings.kafka.bootstrap_servers}, {len(wanted)} topics"
        finally:
            await kafka_client.close()

    checks: dict[str, Check] = {"temporal": temporal, "kafka": kafka}
    if ledger_ping is not None:
        ping = ledger_ping

        async def clickhouse() -> str:
            await asyncio.to_thread(ping)
            return f"ledger {settings.clickhouse.database}"

        checks["clickhouse"] = clickhouse
    return checks
