"""Nothing is lost and nothing duplicated when a worker or the bridge dies by SIGKILL."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from karma.client import ActionHandle
from karma.lifecycle import ActionState, EventType
from tests.conftest import unique
from tests.support.checks import assert_mirrored, event_types
from tests.support.processes import (
    KarmaProcess,
    finish_on_a_new_worker,
    karma_env,
    wait_until_group_caught_up,
)
from workers.embedded import EmbeddedKarma


async def started(handle: ActionHandle) -> None:
    async for event in handle.transitions(poll_interval=0.1):
        if event.event_type is EventType.STARTED:
            return


async def test_worker_killed_mid_action_resumes_on_a_new_worker(
    karma: EmbeddedKarma, tmp_path: Path
) -> None:
    queue = unique("crash")
    env = karma_env(karma.settings, KARMA_TEMPORAL__TASK_QUEUE=queue)
    first = KarmaProcess(["worker"], env, tmp_path / "worker-1.log")
    await first.wait_for_output("worker on task queue")
    handle = await karma.client.request("delay", {"seconds": 3}, task_queue=queue)
    await started(handle)
    await asyncio.sleep(1)  # the executor is sleeping inside the activity now
    first.kill()

    outcome, status = await finish_on_a_new_worker(
        handle, env, tmp_path / "worker-2.log", timeout=90
    )
    assert outcome.state is ActionState.SUCCEEDED
    assert outcome.attempts == 2
    assert event_types(status) == [
        EventType.REQUESTED,
        EventType.ACCEPTED,
        EventType.STARTED,
        EventType.RETRYING,
        EventType.SUCCEEDED,
    ]
    assert status.transitions[3].attrs["error"]["type"] == "heartbeat_timeout"
    await assert_mirrored(karma, [status])


async def _run_logs(karma: EmbeddedKarma, count: int) -> list[str]:
    handles = await asyncio.gather(
        *(karma.client.request("log", {"message": f"m{i}"}) for i in range(count))
    )
    await asyncio.gather(*(asyncio.wait_for(h.result(), 60) for h in handles))
    return [h.action_id for h in handles]


def _read_ledger(dsn: str, action_ids: list[str]) -> dict[str, object]:
    """chdb lets one process open one data path: read the bridge's ledger from another."""
    import subprocess

    out = subprocess.run(
        [sys.executable, "-m", "tests.support.read_ledger", dsn, *action_ids],
        capture_output=True,
        check=True,
        text=True,
        timeout=120,
    )
    report: dict[str, object] = json.loads(out.stdout)
    return report


async def test_bridge_killed_loses_nothing_and_duplicates_nothing(
    karma: EmbeddedKarma, tmp_path: Path
) -> None:
    group = unique("ledger-under-test")
    env = karma_env(
        karma.settings,
        KARMA_DATA_DIR=tmp_path / "bridge",
        KARMA_BRIDGE__CONSUMER_GROUP=group,
        KARMA_BRIDGE__BATCH_MAX_SECONDS="0.2",
        KARMA_BRIDGE__BATCH_MAX_ROWS="20",
        # Only the ledger sink is under test; the session's bridge keeps the ingress.
        KARMA_INGRESS__ENABLED="false",
    )
    first = KarmaProcess(["bridge"], env, tmp_path / "bridge-1.log")
    await first.wait_for_output("bridge: Kafka")
    before = await _run_logs(karma, 10)
    await wait_until_group_caught_up(karma.settings, group)
    first.kill()  # between batches: everything so far is committed

    while_down = await _run_logs(karma, 10)

    # Killed again mid-stream: its first batch is committed, later ones may be written
    # to ClickHouse without their offsets committed.
    second = KarmaProcess(["bridge"], env, tmp_path / "bridge-2.log")
    running = asyncio.ensure_future(_run_logs(karma, 10))
    await second.wait_for_output("ledger batch committed")
    second.kill()
    during_restart = await running

    third = KarmaProcess(["bridge"], env, tmp_path / "bridge-3.log")
    await third.wait_for_output("bridge: Kafka")
    await wait_until_group_caught_up(karma.settings, group)
    assert third.terminate() == 0, third.output()

    ids = before + while_down + during_restart
    statuses = await asyncio.gather(*(karma.client.handle(a).status() for a in ids))
    expected = sorted(e.event_id for s in statuses for e in s.transitions)
    report = _read_ledger(f"chdb://{tmp_path / 'bridge' / 'clickhouse'}", ids)
    assert sorted(report["event_ids"]) == expected  # type: ignore[arg-type]
    assert report["rows"] == len(expected)  # stored once each, not merely deduplicated
