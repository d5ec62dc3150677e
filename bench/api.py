"""The HTTP API's cost: request → workflow started through `POST /v1/actions` against the
SDK directly (one at a time, interleaved), and Server-Sent Events delivery (transition
recorded → event received by a subscriber)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from bench.measure import nearest_rank
from bench.stack import BenchStack


@dataclass
class ApiSpeed:
    api_start_ms: list[float]
    sdk_start_ms: list[float]
    sse_delivery_ms: list[float]

    @staticmethod
    def p(values: list[float], q: float) -> float:
        return nearest_rank(values, q) if values else float("nan")


async def api_speed(stack: BenchStack, *, count: int) -> ApiSpeed:
    api = stack.karma.api
    assert api is not None, "the embedded stack serves the API"
    body = {"type": "bench.noop", "params": {}}
    out = ApiSpeed([], [], [])
    key = stack.karma.admin_key
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=api.url, timeout=60, headers=headers) as http:
        for _ in range(count):
            began = time.perf_counter()
            answer = await http.post("/v1/actions", json=body)
            out.api_start_ms.append((time.perf_counter() - began) * 1000)
            answer.raise_for_status()
            began = time.perf_counter()
            handle = await stack.client.request("bench.noop")
            out.sdk_start_ms.append((time.perf_counter() - began) * 1000)
            await handle.result()
            # Delivery: an action that runs a little while, followed from just after its
            # start; only transitions recorded after the stream opened count (the earlier
            # ones are replayed from its status).
            delayed = await http.post(
                "/v1/actions", json={"type": "delay", "params": {"seconds": 0.3}}
            )
            delayed.raise_for_status()
            action_id = delayed.json()["action_id"]
            async with http.stream(
                "GET",
                f"/v1/actions/{action_id}/transitions",
                headers={"Accept": "text/event-stream"},
            ) as stream:
                opened = datetime.now(UTC)
                async for line in stream.aiter_lines():
                    if line.startswith("data:"):
                        received = datetime.now(UTC)
                        recorded = datetime.fromisoformat(json.loads(line[5:])["ts"])
                        if recorded > opened:
                            delay = (received - recorded).total_seconds() * 1000
                            out.sse_delivery_ms.append(delay)
    return out
