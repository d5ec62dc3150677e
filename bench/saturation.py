"""Throughput at saturation, Karma against bare Temporal: many short rounds interleaved
A B B A … so that drift in a shared machine (the SQLite file grows, the other tenant of the
cores comes and goes) falls on both alike; the ratio of each adjacent pair of rounds."""

from __future__ import annotations

from dataclasses import dataclass

from bench.measure import Run, closed_loop
from bench.stack import BenchStack


@dataclass
class Saturation:
    bare: list[Run]
    karma: list[Run]

    @property
    def ratios(self) -> list[float]:
        return [k.throughput / b.throughput for b, k in zip(self.bare, self.karma, strict=True)]

    @staticmethod
    def total(runs: list[Run]) -> Run:
        total = Run(runs[0].name, 0, 0.0, [])
        for run in runs:
            total.count += run.count
            total.seconds += run.seconds
            total.latencies += run.latencies
            for process, seconds in run.cpu.items():
                total.cpu[process] = total.cpu.get(process, 0.0) + seconds
        return total


async def saturation(
    stack: BenchStack, *, pairs: int, actions: int, concurrency: int
) -> Saturation:
    pids = stack.pids
    await closed_loop("warm-up", concurrency, concurrency, stack.bare, pids)
    await closed_loop("warm-up", concurrency, concurrency, stack.action, pids)
    bare: list[Run] = []
    karma: list[Run] = []
    for pair in range(pairs):
        order = [("bare", stack.bare), ("karma", stack.action)]
        for name, one in order if pair % 2 == 0 else order[::-1]:  # A B, then B A
            run = await closed_loop(name, actions, concurrency, one, pids)
            (bare if name == "bare" else karma).append(run)
        print(
            f"  pair {pair + 1}/{pairs}: bare {bare[-1].throughput:.1f}/s, "
            f"karma {karma[-1].throughput:.1f}/s, ratio "
            f"{karma[-1].throughput / bare[-1].throughput:.2f}",
            flush=True,
        )
    return Saturation(bare, karma)
