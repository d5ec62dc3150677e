"""The `karma` command against the running embedded stack."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bridge.dlq import read_dead_letters
from karma.lifecycle import ActionState
from tests.conftest import unique
from tests.support.kafka import produce
from tests.support.processes import karma_env, run_karma
from tests.support.waiting import reached
from workers.embedded import EmbeddedKarma


async def test_request_wait_status_and_idempotency(karma: EmbeddedKarma) -> None:
    env = karma_env(karma.settings)
    key = unique("cli")
    code, out = await run_karma(
        ["request", "demo.flaky", "-p", "failures=1", "--idempotency-key", key, "--wait"], env
    )
    assert code == 0, out
    assert "requested" in out
    for line in ("action.requested", "action.retrying", "action.succeeded"):
        assert line in out
    assert "SUCCEEDED after 2 attempt(s)" in out
    action_id = out.split()[1]

    code, again = await run_karma(["request", "demo.flaky", "--idempotency-key", key], env)
    assert code == 0
    assert f"action {action_id} already requested (same idempotency key)" in again

    code, status = await run_karma(["status", action_id], env)
    assert code == 0, status
    assert "state    SUCCEEDED" in status
    assert "#5" in status  # REQUESTED, ACCEPTED, STARTED, RETRYING, SUCCEEDED


async def test_a_failed_action_exits_1(karma: EmbeddedKarma) -> None:
    code, out = await run_karma(
        [
            "request",
            "http_request",
            "-p",
            "url=http://127.0.0.1:1/nowhere",
            "-p",
            "timeout_seconds=0.5",
            "--wait",
        ],
        karma_env(karma.settings),
        timeout=120,
    )
    assert code == 1, out
    assert "FAILED after 4 attempt(s)" in out
    assert "ConnectError" in out


async def test_cancel_from_the_command_line(karma: EmbeddedKarma) -> None:
    env = karma_env(karma.settings)
    code, out = await run_karma(["request", "delay", "-p", "seconds=120"], env)
    assert code == 0, out
    action_id = out.split()[1]
    handle = karma.client.handle(action_id)
    code, out = await run_karma(["cancel", action_id], env)
    assert code == 0, out
    outcome = await asyncio.wait_for(handle.result(), 60)
    assert outcome.state is ActionState.CANCELLED


async def test_status_of_an_unknown_action(karma: EmbeddedKarma) -> None:
    code, out = await run_karma(["status", "act_nope"], karma_env(karma.settings))
    assert code == 2
    assert "no action 'act_nope'" in out


async def test_setup_is_idempotent(karma: EmbeddedKarma, tmp_path: Path) -> None:
    env = karma_env(karma.settings, KARMA_DATA_DIR=tmp_path)
    code, out = await run_karma(["setup"], env)
    assert code == 0, out
    assert "Temporal search attributes: created none (all present)" in out
    assert "Kafka topics: created none (all present)" in out
    assert "ClickHouse ledger schema ready" in out
    assert (tmp_path / "clickhouse").is_dir()


async def test_callbacks_and_following_transitions(karma: EmbeddedKarma, tmp_path: Path) -> None:
    env = karma_env(karma.settings)
    handle = await karma.client.request("test.await", {"external_id": unique("ext")})
    follow = asyncio.create_task(run_karma(["transitions", handle.action_id, "--follow"], env))
    await reached(handle, ActionState.WAITING)

    step = tmp_path / "step.json"
    step.write_text(json.dumps({"event_type": "step", "attrs": {"percent": 40, "message": "hi"}}))
    code, out = await run_karma(["callback", handle.action_id, "--event", str(step)], env)
    assert code == 0, out
    assert f"(step) delivered to {handle.action_id}" in out
    code, out = await run_karma(["callback", handle.action_id, "--event", "-"], env, stdin=b"[1]")
    assert code == 2
    assert "--event: expected a JSON object, got an array" in out
    done = json.dumps({"event_type": "done", "attrs": {"answer": "cli"}}).encode()
    # `signal` and `events` are the commands' former names, kept as aliases.
    code, out = await run_karma(["signal", handle.action_id, "-e", "-"], env, stdin=done)
    assert code == 0, out

    code, followed = await asyncio.wait_for(follow, 60)
    assert code == 0, followed
    lines = [line.split()[2] for line in followed.splitlines() if line.strip().startswith("#")]
    assert lines == [
        "action.requested",
        "action.accepted",
        "action.started",
        "action.waiting",
        "action.progress",
        "action.succeeded",
    ]
    assert "40%, hi" in followed
    code, out = await run_karma(["callback", handle.action_id, "-e", "-"], env, stdin=done)
    assert code == 2
    assert f"action '{handle.action_id}' has ended: it takes no more callbacks" in out
    code, out = await run_karma(["events", handle.action_id, "--json"], env)
    assert code == 0, out
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [1, 2, 3, 4, 5, 6]


async def test_dlq_list_and_replay(karma: EmbeddedKarma) -> None:
    env = karma_env(karma.settings)
    kafka = karma.settings.kafka
    marker = unique("dlq")
    await produce(kafka, kafka.topics.requested, [f"garbage {marker}".encode()])
    async with asyncio.timeout(60):
        while True:
            code, out = await run_karma(["dlq", "list", "--json"], env)
            assert code == 0, out
            mine = [json.loads(line) for line in out.splitlines() if marker in line]
            if mine:
                break
            await asyncio.sleep(0.5)
    (letter,) = mine
    assert letter["value"] == f"garbage {marker}"
    assert letter["topic"] == kafka.topics.requested
    assert letter["stage"] == "ingress.requests"
    assert "not JSON" in letter["reason"]

    code, out = await run_karma(["dlq", "list"], env)
    assert code == 0, out
    assert f"    value:  garbage {marker}" in out
    assert "dead letter(s) on actions.dlq" in out

    code, out = await run_karma(["dlq", "replay", letter["position"]], env)
    assert code == 0, out
    assert f"replayed {letter['position']} to {kafka.topics.requested}" in out
    async with asyncio.timeout(60):  # still garbage: dead-lettered again, with its origin
        while True:
            again = [
                d for d in await read_dead_letters(kafka) if marker.encode() in (d.value or b"")
            ]
            if len(again) == 2:
                break
            await asyncio.sleep(0.5)
    assert (
        again[1].origin
        == again[0].origin
        == (f"kafka:{kafka.topics.requested}:{letter['partition']}:{letter['offset']}")
    )

    code, out = await run_karma(["dlq", "replay", "zz", "0:99999999"], env)
    assert code == 2
    assert "zz: expected PARTITION:OFFSET" in out
    assert "0:99999999: no record there" in out


async def test_each_kind_runs_from_the_command_line_into_the_ledger(karma: EmbeddedKarma) -> None:
    env = karma_env(karma.settings)
    code, saga = await run_karma(
        ["request", "demo.provision", "-p", "fail_at=activate", "--wait"], env
    )
    assert code == 1, saga
    for line in (
        "action.compensating",
        "action.step_compensated step configure compensated",
        "action.step_compensated step reserve compensated",
        "action.compensated",
        "FAILED after 1 attempt(s)",
    ):
        assert line in saga, saga
    code, drain = await run_karma(["request", "demo.drain", "-p", "pause_seconds=0", "--wait"], env)
    assert code == 0, drain
    assert drain.count("action.progress") == 5
    assert "SUCCEEDED" in drain
    code, skipped = await run_karma(
        ["request", "demo.provision", "-p", "already_provisioned=true", "--wait"], env
    )
    assert code == 0, skipped
    assert "action.skipped" in skipped
    assert "reason: svc-1 is already provisioned" in skipped

    for out, count in ((saga, 10), (drain, 9), (skipped, 4)):
        action_id = out.split()[1]
        rows = await asyncio.to_thread(karma.ledger.transitions, [action_id])
        async with asyncio.timeout(30):
            while len(rows) < count:
                await asyncio.sleep(0.2)
                rows = await asyncio.to_thread(karma.ledger.transitions, [action_id])
        assert [r.seq for r in rows] == list(range(1, count + 1))
        assert await asyncio.to_thread(karma.ledger.count_events, [action_id]) == count


async def test_dlq_list_on_a_missing_topic_says_so(karma: EmbeddedKarma) -> None:
    topic = unique("no-dlq")
    env = karma_env(karma.settings, KARMA_KAFKA__TOPICS__DLQ=topic)
    code, out = await run_karma(["dlq", "list"], env)
    assert code == 3, out
    assert f"Kafka topic '{topic}' does not exist (karma setup creates it)" in out
