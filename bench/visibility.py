"""How soon a transition is in ClickHouse once recorded, under a steady load below
saturation: `ingested_at - ts` of every transition of the actions started."""

from __future__ import annotations

import asyncio
import time

from bench.measure import nearest_rank, open_loop
from bench.stack import BenchStack
from karma import names

CHUNK = 1000  # action ids per query


async def ledger_visibility(
    stack: BenchStack, *, rate: float, seconds: float
) -> tuple[int, float, float, float]:
    """(transitions, p50 ms, p99 ms, max ms) at `rate` actions per second."""
    ids: list[str] = []

    async def one(i: int) -> None:
        handle = await stack.client.request("bench.noop")
        ids.append(handle.action_id)
        await handle.result()

    await open_loop("visibility", rate, seconds, one)
    expected = 4 * len(ids)  # REQUESTED, ACCEPTED, STARTED, SUCCEEDED
    ledger = stack.karma.ledger
    table = f"{ledger.database}.{names.TABLE_ACTION_EVENTS}"
    query = (
        "SELECT toUnixTimestamp64Milli(ingested_at) - toUnixTimestamp64Milli(ts) "
        f"FROM {table} FINAL WHERE action_id IN %(ids)s"
    )

    def delays() -> list[float]:
        # In chunks: ids are inlined into the query, whose size ClickHouse caps.
        return [
            float(row[0])
            for start in range(0, len(ids), CHUNK)
            for row in ledger.rows(query, {"ids": ids[start : start + CHUNK]})
        ]

    found: list[float] = []

    async def all_there() -> bool:
        found[:] = await asyncio.to_thread(delays)
        return len(found) >= expected

    deadline = time.monotonic() + 30
    while not await all_there():
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(found)} of {expected} transitions reached the ledger")
        await asyncio.sleep(0.1)
    return len(found), nearest_rank(found, 0.5), nearest_rank(found, 0.99), max(found)
