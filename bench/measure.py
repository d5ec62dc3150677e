"""Measuring a run: throughput, latencies and the CPU every process spent."""

from __future__ import annotations

import asyncio
import math
import os
import resource
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

One = Callable[[int], Awaitable[None]]


@dataclass
class Run:
    name: str
    count: int
    seconds: float
    latencies: list[float]
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per process

    @property
    def throughput(self) -> float:
        return self.count / self.seconds

    def percentile(self, p: float) -> float:
        """Milliseconds (nearest rank)."""
        return nearest_rank(self.latencies, p) * 1000

    def cpu_ms_per_action(self, process: str) -> float:
        return 1000 * self.cpu.get(process, 0.0) / max(1, self.count)

    @property
    def total_cpu_ms_per_action(self) -> float:
        return 1000 * sum(self.cpu.values()) / max(1, self.count)


def cpu_seconds(pids: dict[str, int | None]) -> dict[str, float]:
    """CPU time (user + system) so far of this process and of the servers."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    seconds = {"karma process": usage.ru_utime + usage.ru_stime}
    ticks = os.sysconf("SC_CLK_TCK")
    for name, pid in pids.items():
        if pid is not None:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            seconds[f"{name} server"] = (int(fields[11]) + int(fields[12])) / ticks
    return seconds


async def closed_loop(
    name: str, count: int, concurrency: int, one: One, pids: dict[str, int | None]
) -> Run:
    """`count` calls of `one` by `concurrency` clients, each starting the next when its
    previous ended (saturation)."""
    latencies: list[float] = []
    todo = iter(range(count))

    async def client() -> None:
        for i in todo:
            started = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - started)

    cpu_before = cpu_seconds(pids)
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    cpu = {k: v - cpu_before[k] for k, v in cpu_seconds(pids).items()}
    return Run(name, count, elapsed, latencies, cpu)


async def open_loop(name: str, rate: float, seconds: float, one: One) -> Run:
    """Calls of `one` started at `rate` per second for `seconds`, whatever is still running
    (a load below saturation)."""
    latencies: list[float] = []
    tasks = []

    async def timed(i: int) -> None:
        started = time.perf_counter()
        await one(i)
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    count = int(rate * seconds)
    for i in range(count):
        await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
        tasks.append(asyncio.ensure_future(timed(i)))
    await asyncio.gather(*tasks)
    return Run(name, count, time.perf_counter() - started, latencies)


def nearest_rank(values: list[float], p: float) -> float:
    """The smallest value with at least a fraction `p` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


async def until(what: str, done: Callable[[], bool], timeout: float = 120.0) -> None:
    """Wait (polling) until `done()`; a benchmark step that cannot finish says so."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.01)


def spread(values: list[float]) -> str:
    """Median, quartiles and range, for how stable a figure was."""
    if len(values) < 2:
        return f"{values[0]:.2f}" if values else "n/a"
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return (
        f"median {median:.2f}, quartiles {q1:.2f} to {q3:.2f}, range {min(values):.2f} to "
        f"{max(values):.2f} over {len(values)}"
    )
