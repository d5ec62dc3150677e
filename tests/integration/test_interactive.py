"""Interactive actions on the real stack: approval, rejection, invalid decisions, the CLI."""

from __future__ import annotations

import asyncio

import pytest

from karma.errors import DecisionRefusedError, ErrorType
from karma.lifecycle import ActionState, EventType
from tests.support.checks import assert_mirrored, event_types
from tests.support.processes import karma_env, run_karma
from tests.support.waiting import reached
from workers.embedded import EmbeddedKarma

R, A, W, D, S = (
    EventType.REQUESTED,
    EventType.ACCEPTED,
    EventType.WAITING,
    EventType.DECIDED,
    EventType.STARTED,
)


async def test_an_approved_change_is_applied(karma: EmbeddedKarma) -> None:
    handle = await karma.client.request("demo.approval", {"change": "scale web to 4"})
    waiting = await reached(handle, ActionState.WAITING)
    assert waiting.decision_request is not None
    assert waiting.decision_request["change"] == "scale web to 4"
    assert waiting.transitions[-1].attrs["decision_request"] == waiting.decision_request
    decided = await handle.approve(by="alice", reason="looks fine")
    assert (decided.verdict.value, decided.by) == ("approve", "alice")
    outcome = await asyncio.wait_for(handle.result(), 60)
    assert outcome.state is ActionState.SUCCEEDED
    assert outcome.outputs == {"applied": "scale web to 4", "approved_by": "alice"}
    assert outcome.decision is not None and outcome.decision.reason == "looks fine"
    status = await handle.status()
    assert event_types(status) == [R, A, W, D, S, EventType.SUCCEEDED]
    assert status.transitions[3].attrs["decision"]["by"] == "alice"
    await assert_mirrored(karma, [status])


async def test_a_rejection_fails_the_action_with_its_reason(karma: EmbeddedKarma) -> None:
    handle = await karma.client.request("demo.approval", {"change": "drop table"})
    await reached(handle, ActionState.WAITING)
    await handle.reject(by="bob", reason="not during the freeze")
    outcome = await asyncio.wait_for(handle.result(), 60)
    assert outcome.state is ActionState.FAILED
    assert outcome.error is not None
    assert outcome.error.type is ErrorType.REJECTED
    assert outcome.error.message == "rejected by bob: not during the freeze"
    assert set(outcome.outputs) == {"applied", "approved_by"}
    status = await handle.status()
    assert event_types(status) == [R, A, W, D, EventType.FAILED]
    await assert_mirrored(karma, [status])


@pytest.mark.parametrize(
    ("decision", "by", "reason", "message"),
    [
        ("maybe", "carol", "", "decision: must be 'approve' or 'reject', got 'maybe'"),
        ("approve", " ", "", "by: say who decides"),
        ("reject", "carol", "", "reason: a rejection needs a reason"),
    ],
)
async def test_an_invalid_decision_is_refused_and_changes_nothing(
    karma: EmbeddedKarma, decision: str, by: str, reason: str, message: str
) -> None:
    handle = await karma.client.request("demo.approval", {"change": "rotate keys"})
    before = await reached(handle, ActionState.WAITING)
    with pytest.raises(DecisionRefusedError) as refused:
        await handle.decide(decision, by=by, reason=reason)
    assert message in str(refused.value)
    after = await handle.status()
    assert after.state is ActionState.WAITING
    assert after.transitions == before.transitions
    assert after.decision is None
    await handle.approve(by="carol")
    assert (await asyncio.wait_for(handle.result(), 60)).state is ActionState.SUCCEEDED
    status = await handle.status()
    assert event_types(status) == [R, A, W, D, S, EventType.SUCCEEDED]  # the refusal left none
    await assert_mirrored(karma, [status])


async def test_a_decision_when_none_is_awaited_is_refused(karma: EmbeddedKarma) -> None:
    handle = await karma.client.request("log", {"message": "no question here"})
    await asyncio.wait_for(handle.result(), 60)
    with pytest.raises(DecisionRefusedError, match="is not waiting for a decision"):
        await handle.approve(by="dave")


async def test_approve_and_reject_from_the_command_line(karma: EmbeddedKarma) -> None:
    env = karma_env(karma.settings)
    handle = await karma.client.request("demo.approval", {"change": "cli change"})
    await reached(handle, ActionState.WAITING)
    code, out = await run_karma(["status", handle.action_id], env)
    assert code == 0, out
    assert "(karma approve|reject)" in out
    code, out = await run_karma(["reject", handle.action_id], env)
    assert code == 2
    assert "--reason" in out
    code, out = await run_karma(["approve", handle.action_id, "--by", "erin", "-r", "ok"], env)
    assert code == 0, out
    assert f"{handle.action_id}: approved by erin" in out
    code, out = await run_karma(["approve", handle.action_id, "--by", "erin"], env)
    assert code == 2
    assert "is not waiting for a decision" in out
    assert (await asyncio.wait_for(handle.result(), 60)).state is ActionState.SUCCEEDED
    rejected = await karma.client.request("demo.approval", {"change": "cli change 2"})
    await reached(rejected, ActionState.WAITING)
    code, out = await run_karma(["reject", rejected.action_id, "--by", "erin", "-r", "no"], env)
    assert code == 0, out
    assert f"{rejected.action_id}: rejected by erin" in out


async def test_timeout_policies_on_the_real_stack(karma: EmbeddedKarma) -> None:
    handles = {
        policy: await karma.client.request(
            "demo.approval", {"change": f"{policy} me", "timeout_seconds": 1, "on_timeout": policy}
        )
        for policy in ("reject", "approve", "escalate")
    }
    outcomes = {p: await asyncio.wait_for(h.result(), 60) for p, h in handles.items()}
    statuses = {p: await h.status() for p, h in handles.items()}
    assert outcomes["reject"].state is ActionState.FAILED
    assert outcomes["reject"].error is not None
    assert outcomes["reject"].error.type is ErrorType.REJECTED
    assert event_types(statuses["reject"]) == [R, A, W, D, EventType.FAILED]
    assert outcomes["approve"].state is ActionState.SUCCEEDED
    assert outcomes["approve"].outputs["approved_by"] == "timeout policy"
    assert event_types(statuses["approve"]) == [R, A, W, D, S, EventType.SUCCEEDED]
    assert statuses["approve"].transitions[3].attrs["decision"]["automatic"] is True
    assert outcomes["escalate"].state is ActionState.TIMED_OUT
    assert event_types(statuses["escalate"]) == [R, A, W, EventType.ESCALATED, EventType.TIMED_OUT]
    await assert_mirrored(karma, list(statuses.values()))
