"""The ledger after a crash and on stop: `karma dev` reconciles at start what an in-memory
broker lost, drains on SIGTERM, and `karma ledger` explains in one line why it cannot read."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from karma.client import KarmaClient, connect_temporal
from karma.embedded.stack import with_free_ports
from karma.lifecycle import ActionState
from karma.settings import Settings
from tests.integration.test_dev_and_demo import children, gone
from tests.support.processes import Spawn, karma_env, run_karma
from workers.embedded import EmbeddedKarma

pytestmark = pytest.mark.usefixtures("embedded_binaries")


async def test_ledger_outside_a_data_dir_says_so_and_creates_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KARMA_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "karma", "ledger",
        cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 3, (out, err)
    assert err.decode().count("\n") == 1, err  # one line, no traceback
    assert f"no ledger at {tmp_path / '.karma' / 'clickhouse'}" in err.decode()
    assert not (tmp_path / ".karma").exists()


async def test_ledger_held_by_a_running_stack_is_explained_without_chdb_noise(
    karma: EmbeddedKarma,
) -> None:
    """This test process owns the session's embedded ledger, as `karma dev` would."""
    env = karma_env(karma.settings)
    for args in (["ledger"], ["ledger", "reconcile"]):
        code, out = await run_karma(args, env)
        assert code == 3, out
        assert "is held by another process (a running `karma dev`?)" in out
        assert "Code: 76" not in out and "Traceback" not in out
        assert out.count("\n") == 1, out


async def test_killed_dev_loses_nothing_the_restart_reconciles_and_stop_drains(
    tmp_path: Path, report: Callable[[str], None], spawn: Spawn
) -> None:
    settings = with_free_ports(Settings(), tmp_path)
    env = karma_env(settings)
    # The sink holds everything for two minutes: all of it is still only on the broker.
    lagging = {
        **env,
        "KARMA_BRIDGE__BATCH_MAX_SECONDS": "120",
        "KARMA_BRIDGE__BATCH_MAX_ROWS": "100000",
    }
    first = spawn(["dev"], lagging, "dev-1")
    await first.wait_for_output("Press Ctrl-C to stop", timeout=120)
    servers = children(first.proc.pid)
    temporal = await connect_temporal(settings)
    client = KarmaClient(temporal, task_queue=settings.temporal.task_queue)
    handles = [await client.request("log", {"message": f"m{i}"}) for i in range(5)]
    handles.append(await client.request("demo.flaky", {"failures": 1}))
    handles.append(await client.request("delay", {"seconds": 60}))  # still running at the kill
    for handle in handles[:-1]:
        await asyncio.wait_for(handle.result(), 60)
    first.kill()
    assert await gone(servers), "the servers outlived the killed `karma dev`"

    second = spawn(["dev"], env, "dev-2")
    await second.wait_for_output("Press Ctrl-C to stop", timeout=120)
    found = re.search(r"(\d+) transition\(s\) missing, (\d+) published again", second.output())
    assert found, second.output()
    missing, published = int(found.group(1)), int(found.group(2))
    temporal = await connect_temporal(settings)
    client = KarmaClient(temporal, task_queue=settings.temporal.task_queue)
    running = client.handle(handles[-1].action_id)
    await running.cancel()
    assert (await asyncio.wait_for(running.result(), 60)).state is ActionState.CANCELLED
    statuses = [await client.handle(h.action_id).status() for h in handles]
    expected = sorted(e.event_id for s in statuses for e in s.transitions)
    # The finished actions' transitions were all lost; the running one's were published
    # by its attempt but not yet acknowledged to the workflow, which publishes them itself.
    recorded_before_kill = sum(len(s.transitions) for s in statuses[:-1])
    assert missing == published == recorded_before_kill

    assert second.terminate(timeout=60) == 0, second.output()
    assert "ledger: caught up" in second.output()
    ledger = await asyncio.to_thread(read_ledger, settings, [h.action_id for h in handles])
    assert sorted(ledger["event_ids"]) == expected
    assert ledger["rows"] == len(expected)
    report(
        f"killed `karma dev` with {recorded_before_kill} transitions not in the ledger; "
        f"restart reconciled {published}; after the drain: {len(expected)} rows, each once"
    )


def read_ledger(settings: Settings, action_ids: list[str]) -> dict[str, object]:
    """chdb lets one process open a data path: read it from another."""
    import subprocess

    out = subprocess.run(
        [sys.executable, "-m", "tests.support.read_ledger", settings.clickhouse_dsn, *action_ids],
        capture_output=True, check=True, text=True, timeout=120,
    )  # fmt: skip
    report: dict[str, object] = json.loads(out.stdout)
    return report
