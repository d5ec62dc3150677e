"""Where the Karma process spends its CPU per action: py-spy samples (threads holding the
GIL) of this very process during a saturated Karma-only run, grouped by what the frames
belong to. Time outside Python (Temporal's core in Rust, the ClickHouse engine) is the
process CPU the samples do not cover."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.measure import One, Run, closed_loop
from bench.stack import BenchStack

RATE = 200  # samples per second
# First match, from the innermost frame outwards, names the group.
GROUPS: list[tuple[str, tuple[str, ...]]] = [
    (
        "ledger sink: decode, rows",
        ("bridge/sink.py", "bridge/decode.py", "ledger_schema", "untrusted_json"),
    ),
    ("ledger: ClickHouse client", ("clickhouse_connect", "chdb")),
    ("Kafka produce (transitions)", ("aiokafka/producer", "bridge/emit.py")),
    (
        "Kafka consume (sink, ingress)",
        ("aiokafka/consumer", "aiokafka/client.py", "aiokafka/conn.py", "aiokafka/"),
    ),
    ("executor and attempt (activities)", ("activities/", "karma/actions", "bench/bare.py")),
    ("ActionWorkflow code", ("workflows/", "karma/transitions.py", "karma/run_state.py")),
    (
        "Temporal: payloads (pydantic converter, visitors)",
        ("converter", "_visitor", "contrib/pydantic", "pydantic"),
    ),
    ("Temporal: workflow sandbox (restrictions, module proxies)", ("workflow_sandbox",)),
    ("Temporal: workflow activations", ("_workflow_instance", "worker/_workflow.py")),
    ("Temporal: activity tasks", ("worker/_activity.py",)),
    ("Temporal: client calls", ("temporalio/client.py", "temporalio/service.py")),
    ("Temporal: other SDK", ("temporalio/",)),
    ("Karma client (request, result)", ("karma/client.py", "bench/stack.py")),
]


@dataclass
class Profile:
    run: Run
    python_seconds: float
    groups: dict[str, float]  # share of the Python samples

    def ms_per_action(self) -> dict[str, float]:
        per_action = 1000 * self.python_seconds / self.run.count
        out = {name: share * per_action for name, share in self.groups.items()}
        cpu = self.run.cpu_ms_per_action("karma process")
        out["outside Python (Temporal core, ClickHouse engine, ...)"] = max(0.0, cpu - per_action)
        return out


def _group(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, keys in GROUPS:
            if any(k in frame for k in keys):
                return name
    return "asyncio and threads"


async def profile_karma(
    stack: BenchStack, name: str, one: One, *, actions: int, concurrency: int
) -> Profile | str:
    """Profile `actions` calls of `one`; or why there is no profile (py-spy, a dev
    dependency, is missing, may not attach or sampled nothing)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    folder = Path(tempfile.mkdtemp(prefix="karma-profile-"))
    out = folder / "samples.txt"
    try:
        try:
            sampler = await asyncio.create_subprocess_exec(
                spy, "record", "-p", str(os.getpid()), "--rate", str(RATE), "--gil",
                "--nonblocking", "--format", "raw", "-o", str(out),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
        except FileNotFoundError:
            return "py-spy is not installed here (`pip install py-spy`)"
        try:
            # py-spy says nothing until it stops; one that cannot attach exits at once.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sampler.wait(), 1.0)
            if sampler.returncode is not None:
                error = (
                    (await sampler.stderr.read()).decode(errors="replace") if sampler.stderr else ""
                )
                return f"py-spy could not sample this process: {error.strip()[:300]}"
            run = await closed_loop(name, actions, concurrency, one, stack.pids)
        finally:
            with contextlib.suppress(ProcessLookupError):
                sampler.send_signal(signal.SIGINT)  # py-spy writes what it has
            try:
                await asyncio.wait_for(sampler.wait(), 30)
            except TimeoutError:
                sampler.kill()
                await sampler.wait()
        text = await asyncio.to_thread(lambda: out.read_text() if out.exists() else "")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    counts: collections.Counter[str] = collections.Counter()
    for line in text.splitlines():
        stack_text, _, n = line.rpartition(" ")
        if stack_text and n.isdigit():
            counts[_group(stack_text.split(";"))] += int(n)
    total = sum(counts.values())
    if not total:
        return "py-spy recorded no samples"
    groups = {name: n / total for name, n in counts.most_common()}
    # The samples cover the run, the second before it and the moment after it (the
    # process idles then, holding the GIL little): at most the run's length.
    return Profile(run, min(total / RATE, run.seconds), groups)
