"""Requests on `actions.requested` → workflows started per second by the ingress, beside
starting the same workflows directly through the SDK."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import cast

from aiokafka import AIOKafkaProducer

from bench.measure import until
from bench.stack import BenchStack
from bridge.request_ingress import RequestIngress
from karma.ids import action_id_for_key
from karma.kafka_config import producer_kwargs
from karma.lifecycle import ActionState


async def ingress_throughput(stack: BenchStack, *, count: int) -> float:
    """Workflows started per second from `count` requests put on the topic at once (the
    actions are waited for before the next measurement)."""
    bridge = stack.karma.bridge
    assert bridge is not None and bridge.requests is not None
    handler = cast(RequestIngress, bridge.requests.handler)
    started_before = handler.started
    kafka = stack.settings.kafka
    producer = AIOKafkaProducer(**{**producer_kwargs(kafka), "linger_ms": 20})
    await producer.start()
    tag = uuid.uuid4().hex[:8]
    keys = [f"bench-ingress-{tag}-{i}" for i in range(count)]
    begin = time.perf_counter()
    try:
        for i in range(count):
            request = {
                "ts": datetime.now(UTC).isoformat(),
                "event_type": "action.requested",
                "idempotency_key": keys[i],
                "source": {"system": "bench"},
                "attrs": {"command": "bench.noop", "args": {}},
            }
            await producer.send(
                kafka.topics.requested, key=str(i).encode(), value=json.dumps(request).encode()
            )
        await producer.flush()
    finally:
        await producer.stop()
    await until(
        f"the ingress to start {count} actions",
        lambda: handler.started - started_before >= count,
    )
    rate = count / (time.perf_counter() - begin)
    await ended(stack, [action_id_for_key(key) for key in keys])
    return rate


async def sdk_throughput(stack: BenchStack, *, count: int, concurrency: int) -> float:
    """Workflows started per second through `KarmaClient.request`, `concurrency` at once."""
    todo = iter(range(count))
    action_ids: list[str] = []

    async def client() -> None:
        for i in todo:
            action_ids.append(await stack.started_action(i))

    begin = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    rate = count / (time.perf_counter() - begin)
    await ended(stack, action_ids)
    return rate


async def ended(stack: BenchStack, action_ids: list[str]) -> None:
    """Wait for the actions to end, so that they do not run during the next measurement."""
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(stack.client.handle(a).result() for a in action_ids)), 300
    )
    failed = [o.action_id for o in outcomes if o.state is not ActionState.SUCCEEDED]
    if failed:
        raise RuntimeError(f"{len(failed)} benchmark actions did not succeed: {failed[:5]}")
