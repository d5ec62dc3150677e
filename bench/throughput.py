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
from karma.client import KarmaClient
from karma.embedded.stack import with_free_ports
from karma.lifecycle import ActionState
from karma.registry import default_registry
from karma.settings import Settings
from workers.embedded import EmbeddedKarma
from workers.worker import workflow_runner

RESULTS = Path(__file__).parent / "results.md"
BARE_QUEUE = "bench-bare"
UNINDEXED = "karma, no search attributes"


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


async def bench(args: argparse.Namespace) -> list[tuple[Run, Run, Run]]:
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
            workflow_runner=workflow_runner(settings.temporal.workflow_sandbox, "bench"),
        )
        run_id = uuid.uuid4().hex[:8]

        async def bare(i: int) -> None:
            await karma.temporal.execute_workflow(
                BareWorkflow.run, "x", id=f"bare-{run_id}-{i}", task_queue=BARE_QUEUE
            )

        unindexed = KarmaClient(
            karma.temporal,
            task_queue=settings.temporal.task_queue,
            registry=registry,
            search_attributes=False,
        )

        async def action(i: int) -> None:
            outcome = await (await client.request("bench.noop")).result()
            assert outcome.state is ActionState.SUCCEEDED

        async def unindexed_action(i: int) -> None:
            outcome = await (await unindexed.request("bench.noop")).result()
            assert outcome.state is ActionState.SUCCEEDED

        pids = karma.servers.pids()
        async with bare_worker:
            await closed_loop("warm-up bare", args.concurrency, args.concurrency, bare, pids)
            await closed_loop("warm-up karma", args.concurrency, args.concurrency, action, pids)
            rounds = []
            for r in range(args.rounds):
                run_id = f"{uuid.uuid4().hex[:8]}-{r}"
                # Rotate who goes first: the SQLite file grows as the run goes on.
                order = [("bare", bare), ("karma", action), (UNINDEXED, unindexed_action)]
                order = order[r % 3 :] + order[: r % 3]
                runs = {
                    name: await closed_loop(name, args.actions, args.concurrency, one, pids)
                    for name, one in order
                }
                b, k, u = runs["bare"], runs["karma"], runs[UNINDEXED]
                print(
                    f"round {r + 1}: bare {b.throughput:.1f}/s, karma {k.throughput:.1f}/s, "
                    f"karma without search attributes {u.throughput:.1f}/s"
                )
                rounds.append((b, k, u))
        return rounds


def _total(runs: list[Run]) -> Run:
    total = Run(runs[0].name, 0, 0.0, [])
    for run in runs:
        total.count += run.count
        total.seconds += run.seconds
        total.latencies += run.latencies
        for process, seconds in run.cpu.items():
            total.cpu[process] = total.cpu.get(process, 0.0) + seconds
    return total


def report(rounds: list[tuple[Run, Run, Run]], args: argparse.Namespace) -> str:
    systems = [_total([r[i] for r in rounds]) for i in range(3)]
    bare, karma, unindexed = systems
    storage = "in memory" if args.in_memory else "SQLite file (WAL)"
    lines = [
        "# Karma vs bare Temporal: throughput benchmark",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python -m bench.throughput "
        f"--actions {args.actions} --concurrency {args.concurrency} --rounds {args.rounds}"
        f"{' --in-memory' if args.in_memory else ''}` on {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, temporalio {version('temporalio')}.",
        "",
        f"Embedded stack: Temporal dev server ({storage}), tansu broker, chdb, all on this "
        f"machine. Closed loop of {args.concurrency} clients; {args.actions} workflows per "
        "system per round, the systems taking turns (each round another one first). "
        "Bare: one workflow, one activity returning its input. "
        "Karma: ActionWorkflow running a no-op action with full mirroring (every transition "
        "acknowledged by Kafka before the workflow ends; the bridge writes them to "
        "ClickHouse), with and without its search attributes "
        "(`KARMA_TEMPORAL__SEARCH_ATTRIBUTES=false`).",
        "",
        "| system | workflows | throughput (/s) | ratio to bare | p50 latency (ms) "
        "| p99 latency (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for run in systems:
        lines.append(
            f"| {run.name} | {run.count} | {run.throughput:.1f} "
            f"| {run.throughput / bare.throughput:.2f} | {run.percentile(0.5):.0f} "
            f"| {run.percentile(0.99):.0f} |"
        )
    per_round = ", ".join(f"{k.throughput / b.throughput:.2f}" for b, k, _ in rounds)
    lines += [
        "",
        f"**Ratio Karma/bare throughput: {karma.throughput / bare.throughput:.2f}** "
        f"(per round: {per_round}; median "
        f"{statistics.median(k.throughput / b.throughput for b, k, _ in rounds):.2f}); "
        f"without search attributes {unindexed.throughput / bare.throughput:.2f}.",
        "",
        "CPU per workflow (ms), where the difference goes (the Karma process runs the clients, "
        "the workers and the bridge):",
        "",
        "| process | " + " | ".join(run.name for run in systems) + " |",
        "|---|---|---|---|",
    ]
    for process in bare.cpu:
        cells = " | ".join(f"{1000 * run.cpu[process] / run.count:.1f}" for run in systems)
        lines.append(f"| {process} | {cells} |")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--actions", type=int, default=400, help="workflows per system per round")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent clients")
    parser.add_argument("--rounds", type=int, default=3, help="each system leads once in 3")
    parser.add_argument("--in-memory", action="store_true", help="Temporal without SQLite")
    parser.add_argument("--no-write", action="store_true", help="do not update results.md")
    args = parser.parse_args()
    text = report(asyncio.run(bench(args)), args)
    print(text)
    if not args.no_write:
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
