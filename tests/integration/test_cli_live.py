"""The `karma` command against the running embedded stack."""

from __future__ import annotations

import asyncio
from pathlib import Path

from karma.lifecycle import ActionState
from tests.conftest import unique
from tests.support.processes import karma_env, run_karma
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
