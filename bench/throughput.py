"""Karma actions vs bare Temporal workflows: throughput and start→terminal latency.

    python -m bench.throughput [--actions N] [--concurrency C] [--rounds R] [--in-memory]

Both run on the same embedded stack (Temporal dev server, tansu, chdb) with the same worker
settings, in a closed loop of C concurrent clients. Karma runs with full mirroring: every
transition goes to Kafka and the bridge writes it to ClickHouse. Rounds alternate bare and
Karma so drift in the machine affects both. Results go to stdout and bench/results.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from temporalio.worker import Worker

from bench.bare import BareWorkflow, NoopExecutor, bare_activity
from karma.embedded.stack import with_free_ports
from karma.lifecycle import ActionState
from karma.registry import default_registry
from karma.settings import Settings
from workers.embedded import EmbeddedKarma
from workers.worker import sandboxed_runner

RESULTS = Path(__file__).parent / "results.md"
BARE_QUEUE = "bench-bare"


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
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000


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
    name: str,
    count: int,
    concurrency: int,
    one: Callable[[int], Awaitable[None]],
    pids: dict[str, int | None],
) -> Run:
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


async def bench(args: argparse.Namespace) -> list[tuple[Run, Run]]:
    data_dir = Path(tempfile.mkdtemp(prefix="karma-bench-"))
    settings = with_free_ports(Settings(), data_dir)
    registry = default_registry().extended([NoopExecutor])
    async with EmbeddedKarma(settings, persistent=not args.in_memory, registry=registry) as karma:
        client = karma.client
        bare_worker = Worker(
            karma.temporal,
            task_queue=BARE_QUEUE,
            workflows=[BareWorkflow],
            activities=[bare_activity],
            # Same runner as Karma's worker, the baseline's module passed through likewise.
            workflow_runner=sandboxed_runner("bench"),
        )
        run_id = uuid.uuid4().hex[:8]

        async def bare(i: int) -> None:
            await karma.temporal.execute_workflow(
                BareWorkflow.run, "x", id=f"bare-{run_id}-{i}", task_queue=BARE_QUEUE
            )

        async def action(i: int) -> None:
            outcome = await (await client.request("bench.noop")).result()
            assert outcome.state is ActionState.SUCCEEDED

        pids = karma.servers.pids()
        async with bare_worker:
            await closed_loop("warm-up bare", args.concurrency, args.concurrency, bare, pids)
            await closed_loop("warm-up karma", args.concurrency, args.concurrency, action, pids)
            rounds = []
            for r in range(args.rounds):
                run_id = f"{uuid.uuid4().hex[:8]}-{r}"
                b = await closed_loop("bare", args.actions, args.concurrency, bare, pids)
                k = await closed_loop("karma", args.actions, args.concurrency, action, pids)
                print(f"round {r + 1}: bare {b.throughput:.1f}/s, karma {k.throughput:.1f}/s")
                rounds.append((b, k))
        return rounds


def report(rounds: list[tuple[Run, Run]], args: argparse.Namespace) -> str:
    bare = Run("bare", 0, 0, [])
    karma = Run("karma", 0, 0, [])
    for b, k in rounds:
        for total, one in ((bare, b), (karma, k)):
            total.count += one.count
            total.seconds += one.seconds
            total.latencies += one.latencies
            for process, seconds in one.cpu.items():
                total.cpu[process] = total.cpu.get(process, 0.0) + seconds
    ratio = karma.throughput / bare.throughput
    per_round = ", ".join(f"{k.throughput / b.throughput:.2f}" for b, k in rounds)
    storage = "in memory" if args.in_memory else "SQLite file (WAL)"
    lines = [
        "# Karma vs bare Temporal: throughput benchmark",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python -m bench.throughput "
        f"--actions {args.actions} --concurrency {args.concurrency} --rounds {args.rounds}"
        f"{' --in-memory' if args.in_memory else ''}` on {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, temporalio {version('temporalio')}.",
        "",
        f"Embedded stack: Temporal dev server ({storage}), tansu broker, chdb. Closed loop of "
        f"{args.concurrency} clients; {args.actions} workflows per system per round, rounds "
        "alternating bare/Karma. Bare: one workflow, one activity returning its input. Karma: "
        "ActionWorkflow running a no-op action with full mirroring (every transition "
        "acknowledged by Kafka before the workflow ends; the bridge writes them to ClickHouse).",
        "",
        "| system | workflows | throughput (/s) | p50 latency (ms) | p99 latency (ms) |",
        "|---|---|---|---|---|",
    ]
    for run in (bare, karma):
        lines.append(
            f"| {run.name} | {run.count} | {run.throughput:.1f} | {run.percentile(0.5):.0f} "
            f"| {run.percentile(0.99):.0f} |"
        )
    lines += [
        "",
        f"**Ratio Karma/bare throughput: {ratio:.2f}** (per round: {per_round}; "
        f"median {statistics.median(k.throughput / b.throughput for b, k in rounds):.2f}).",
        "",
        "CPU per workflow (ms), where the difference goes (the Karma process runs the client, "
        "the worker and the bridge):",
        "",
        "| process | bare | karma |",
        "|---|---|---|",
    ]
    for process in bare.cpu:
        lines.append(
            f"| {process} | {1000 * bare.cpu[process] / bare.count:.1f} "
            f"| {1000 * karma.cpu[process] / karma.count:.1f} |"
        )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--actions", type=int, default=500, help="workflows per system per round")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent clients")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--in-memory", action="store_true", help="Temporal without SQLite")
    parser.add_argument("--no-write", action="store_true", help="do not update results.md")
    args = parser.parse_args()
    text = report(asyncio.run(bench(args)), args)
    print(text)
    if not args.no_write:
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
