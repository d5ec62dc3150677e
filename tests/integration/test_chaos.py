"""Chaos under load: a steady stream of actions of every kind while the worker is killed,
the bridge is killed mid-batch, the broker freezes for 15 s and the Temporal server
restarts on its SQLite file. Each scenario ends with every action terminal and every
transition in ClickHouse exactly once (none missing, none duplicated).

The stack here is its own (persistent Temporal, broker, `karma worker`, `karma bridge`
and the reference jobs service as separate processes), so it can be broken freely."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from karma.client import ActionHandle, KarmaClient, connect_temporal
from karma.embedded import EmbeddedServers
from karma.embedded.process import free_port
from karma.embedded.stack import with_free_ports
from karma.ids import event_id_for
from karma.settings import Settings
from karma.status import ActionOutcome
from tests.support.processes import KarmaProcess, karma_env

LOAD_SECONDS = 12.0
EVERY_SECONDS = 0.3
SETTLE_SECONDS = 150.0
OUTAGE_SECONDS = 15.0

MIX: list[tuple[str, dict[str, Any]]] = [
    ("log", {"message": "chaos"}),
    ("demo.flaky", {"failures": 1, "retry_after": 0.2}),
    ("delay", {"seconds": 2}),
    ("demo.provision", {"step_seconds": 0.3}),
    ("demo.provision", {"step_seconds": 0.3, "fail_at": "activate"}),
    ("demo.approval", {"change": "chaos", "timeout_seconds": 3, "on_timeout": "approve"}),
    ("demo.drain", {"total": 6, "batch": 2, "pause_seconds": 0.3}),
    ("demo.job", {"steps": 2, "step_seconds": 0.3, "anonymous": True}),
]


pytestmark = pytest.mark.usefixtures("embedded_binaries")


@dataclass
class Chaos:
    settings: Settings
    env: dict[str, str]
    servers: EmbeddedServers
    logs: Path
    processes: dict[str, KarmaProcess] = field(default_factory=dict)
    starts: Counter[str] = field(default_factory=Counter)

    def start(self, name: str, args: list[str]) -> KarmaProcess:
        self.starts[name] += 1
        process = KarmaProcess(args, self.env, self.logs / f"{name}-{self.starts[name]}.log")
        self.processes[name] = process
        return process

    async def start_worker(self) -> None:
        await self.start("worker", ["worker"]).wait_for_output("worker on task queue")

    async def start_bridge(self) -> None:
        await self.start("bridge", ["bridge"]).wait_for_output("bridge: Kafka", timeout=120)

    async def client(self) -> KarmaClient:
        temporal = await connect_temporal(self.settings)
        return KarmaClient(temporal, task_queue=self.settings.temporal.task_queue)

    async def stop_all(self) -> None:
        for process in self.processes.values():
            process.ensure_stopped()
        await self.servers.stop()


@pytest.fixture(scope="module")
async def chaos(
    tmp_path_factory: pytest.TempPathFactory, embedded_binaries: None
) -> AsyncIterator[Chaos]:
    root = tmp_path_factory.mktemp("chaos")
    settings = with_free_ports(Settings(), root)
    jobs_port = free_port()
    env = karma_env(
        settings,
        KARMA_SERVICES__JOBS=f"http://127.0.0.1:{jobs_port}",
        KARMA_BRIDGE__BATCH_MAX_SECONDS="0.3",
        KARMA_BRIDGE__BATCH_MAX_ROWS="50",
        KARMA_INGRESS__RESOLVE_TIMEOUT_S="60",
        KARMA_LOG_LEVEL="INFO",
    )
    servers = EmbeddedServers(settings, persistent=True)
    await servers.start()
    stack = Chaos(settings, env, servers, root)
    try:
        await stack.start_bridge()  # creates the topics
        await stack.start("jobs", ["reference-service", "--port", str(jobs_port)]).wait_for_output(
            "reference jobs service at"
        )
        await stack.start_worker()
        yield stack
    finally:
        await stack.stop_all()


async def load(
    client: KarmaClient, seconds: float, at: float, disrupt: Callable[[], Awaitable[str]]
) -> tuple[list[ActionHandle], str]:
    """Request actions of every kind for `seconds`; `disrupt` runs `at` seconds in."""
    handles: list[ActionHandle] = []
    kinds = itertools.cycle(MIX)
    loop = asyncio.get_running_loop()
    begin = loop.time()
    disruption = None
    while loop.time() - begin < seconds:
        if disruption is None and loop.time() - begin >= at:
            disruption = asyncio.ensure_future(disrupt())
        action_type, params = next(kinds)
        with contextlib.suppress(Exception):  # Temporal may be down: that request is skipped
            handles.append(await asyncio.wait_for(client.request(action_type, params), 5))
        await asyncio.sleep(EVERY_SECONDS)
    assert disruption is not None
    return handles, await disruption


async def outcome_of(handle: ActionHandle) -> ActionOutcome:
    """Its result, asking again while Temporal is unreachable."""
    async with asyncio.timeout(SETTLE_SECONDS):
        while True:
            try:
                return await handle.result()
            except Exception:  # noqa: BLE001 - the server may still be coming back
                await asyncio.sleep(1)


async def expected_event_ids(handle: ActionHandle) -> list[str]:
    last = (await handle.status()).transitions[-1].seq
    return [event_id_for(handle.action_id, n) for n in range(1, last + 1)]


def read_ledger(dsn: str, action_ids: list[str]) -> dict[str, Any]:
    import subprocess

    out = subprocess.run(
        [sys.executable, "-m", "tests.support.read_ledger", dsn, *action_ids],
        capture_output=True, check=True, text=True, timeout=120,
    )  # fmt: skip
    report: dict[str, Any] = json.loads(out.stdout)
    return report


async def run_scenario(
    chaos: Chaos,
    report: Callable[[str], None],
    name: str,
    disrupt: Callable[[], Awaitable[str]],
    at: float,
) -> None:
    if "bridge" not in chaos.processes or chaos.processes["bridge"].proc.poll() is not None:
        await chaos.start_bridge()
    client = await chaos.client()
    handles, did = await load(client, LOAD_SECONDS, at, disrupt)
    outcomes = await asyncio.gather(*(outcome_of(h) for h in handles))
    assert all(o.state.is_terminal for o in outcomes)
    expected = sorted(
        itertools.chain.from_iterable(
            await asyncio.gather(*(expected_event_ids(h) for h in handles))
        )
    )
    bridge = chaos.processes["bridge"]
    assert bridge.terminate(timeout=90) == 0, bridge.output()  # drains to the ledger first
    assert "ledger: caught up" in bridge.output()
    ledger = await asyncio.to_thread(
        read_ledger, chaos.settings.clickhouse_dsn, [h.action_id for h in handles]
    )
    missing = sorted(set(expected) - set(ledger["event_ids"]))
    duplicated = ledger["rows"] - len(set(ledger["event_ids"]))
    unexpected = sorted(set(ledger["event_ids"]) - set(expected))
    states = Counter(o.state.value for o in outcomes)
    report(
        f"{name}: {did}; {len(handles)} actions "
        f"({', '.join(f'{s} {n}' for s, n in sorted(states.items()))}), "
        f"{len(expected)} transitions; missing {len(missing)}, duplicated {duplicated}"
    )
    assert (missing, duplicated, unexpected) == ([], 0, [])


async def test_worker_killed_mid_action_and_replaced(
    chaos: Chaos, report: Callable[[str], None]
) -> None:
    async def disrupt() -> str:
        chaos.processes["worker"].kill()
        await asyncio.sleep(1)
        await chaos.start_worker()
        return "SIGKILL of the worker mid-load, a new worker started"

    await run_scenario(chaos, report, "worker", disrupt, at=4)


async def test_bridge_killed_mid_batch_and_restarted(
    chaos: Chaos, report: Callable[[str], None]
) -> None:
    async def disrupt() -> str:
        bridge = chaos.processes["bridge"]
        await bridge.wait_for_output("ledger batch committed")
        bridge.kill()
        await asyncio.sleep(2)
        await chaos.start_bridge()
        return "SIGKILL of the bridge mid-batch, restarted"

    await run_scenario(chaos, report, "bridge", disrupt, at=4)


async def test_broker_frozen_for_15_seconds(chaos: Chaos, report: Callable[[str], None]) -> None:
    async def disrupt() -> str:
        broker = chaos.servers.kafka.process.pid
        assert broker is not None
        os.kill(broker, signal.SIGSTOP)
        await asyncio.sleep(OUTAGE_SECONDS)
        os.kill(broker, signal.SIGCONT)
        return f"SIGSTOP of the broker for {OUTAGE_SECONDS:g}s, then SIGCONT"

    await run_scenario(chaos, report, "broker", disrupt, at=3)


async def test_temporal_restarted_on_its_sqlite_file(
    chaos: Chaos, report: Callable[[str], None]
) -> None:
    async def disrupt() -> str:
        chaos.servers.temporal.stop()
        await asyncio.sleep(2)
        await chaos.servers.temporal.start()
        return "Temporal dev server stopped and started again on the same SQLite file"

    await run_scenario(chaos, report, "temporal", disrupt, at=4)
