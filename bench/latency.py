"""Start → terminal latency with nothing else running, one workflow at a time."""

from __future__ import annotations

from bench.measure import Run, closed_loop
from bench.stack import BenchStack


async def unloaded_latency(stack: BenchStack, *, each: int) -> tuple[Run, Run]:
    pids = stack.pids
    bare = Run("bare", 0, 0.0, [])
    karma = Run("karma", 0, 0.0, [])
    for _ in range(each):  # alternate, one at a time
        for total, one in ((bare, stack.bare), (karma, stack.action)):
            run = await closed_loop(total.name, 1, 1, one, pids)
            total.count += 1
            total.seconds += run.seconds
            total.latencies += run.latencies
    return bare, karma
