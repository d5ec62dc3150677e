"""Transactional actions (saga) and skipped actions on the real stack, checked in ClickHouse."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bridge.dlq import read_dead_letters
from karma.client import ActionHandle
from karma.errors import ErrorType
from karma.lifecycle import ActionState, EventType
from karma.status import ActionStatus
from tests.conftest import unique
from tests.support.actions import SagaExecutor
from tests.support.checks import assert_mirrored, event_types
from tests.support.processes import KarmaProcess, finish_on_a_new_worker, karma_env
from tests.support.waiting import reached
from workers.embedded import EmbeddedKarma

R, A, S, P = EventType.REQUESTED, EventType.ACCEPTED, EventType.STARTED, EventType.PROGRESS
RETRY = EventType.RETRYING
COMPENSATING, STEP, COMPENSATED = (
    EventType.COMPENSATING,
    EventType.STEP_COMPENSATED,
    EventType.COMPENSATED,
)


def calls_of(action_id: str) -> list[tuple[str, dict[str, object]]]:
    return [(what, data) for a, what, data in SagaExecutor.calls if a == action_id]


async def cancel_during_step_b(handle: ActionHandle) -> ActionStatus:
    """Cancel once step a is done (b running); the final status once the action ended."""
    async with asyncio.timeout(30):
        while True:
            if event_types(await handle.status()).count(P) == 1:
                break
            await asyncio.sleep(0.05)
    await handle.cancel()
    await asyncio.wait_for(handle.result(), 60)
    return await handle.status()


async def test_a_failed_step_compensates_the_completed_ones_in_reverse(
    karma: EmbeddedKarma,
) -> None:
    handle = await karma.client.request("test.saga", {"fail_at": "c"})
    outcome = await asyncio.wait_for(handle.result(), 60)
    status = await handle.status()
    assert outcome.state is ActionState.FAILED
    assert outcome.error is not None
    assert outcome.error.message == "step c broke"  # the original error
    assert event_types(status) == [
        R, A, S, P, P, RETRY, COMPENSATING, STEP, STEP, COMPENSATED, EventType.FAILED,
    ]  # fmt: skip
    steps = [
        (e.attrs["step"], e.attrs["outcome"]) for e in status.transitions if e.event_type is STEP
    ]
    assert steps == [("b", "compensated"), ("a", "compensated")]
    assert status.transitions[5].attrs["step"] == "c"  # the retried attempt names its step
    assert calls_of(handle.action_id) == [
        ("run a", {}),
        ("run b", {"a": "a-out"}),
        ("run c", {"a": "a-out", "b": "b-out"}),
        ("run c", {"a": "a-out", "b": "b-out"}),
        ("compensate b", {"undo": "b-token"}),
        ("compensate a", {"undo": "a-token"}),
    ]
    assert status.compensated_steps == ["b", "a"]
    assert outcome.outputs == {"a": "a-out", "b": "b-out"}
    await assert_mirrored(karma, [status])


async def test_a_compensation_is_retried_under_its_own_policy(karma: EmbeddedKarma) -> None:
    handle = await karma.client.request("test.saga", {"fail_at": "b", "flaky_compensation": 2})
    outcome = await asyncio.wait_for(handle.result(), 60)
    status = await handle.status()
    assert outcome.state is ActionState.FAILED
    assert event_types(status)[-4:] == [COMPENSATING, STEP, COMPENSATED, EventType.FAILED]
    assert [w for w, _ in calls_of(handle.action_id)].count("compensate a") == 3
    await assert_mirrored(karma, [status])


async def test_a_compensation_that_keeps_failing_ends_compensation_failed_with_a_dlq_record(
    karma: EmbeddedKarma,
) -> None:
    handle = await karma.client.request("test.saga", {"fail_at": "c", "broken_compensation": "a"})
    outcome = await asyncio.wait_for(handle.result(), 60)
    status = await handle.status()
    assert outcome.state is ActionState.FAILED
    assert outcome.error is not None
    assert outcome.error.type is ErrorType.COMPENSATION_FAILED
    assert "not undone: a" in outcome.error.message
    assert "step c broke" in outcome.error.message
    assert event_types(status)[-4:] == [COMPENSATING, STEP, STEP, EventType.FAILED]
    outcomes = [e.attrs["outcome"] for e in status.transitions if e.event_type is STEP]
    assert outcomes == ["compensated", "failed"]
    assert [w for w, _ in calls_of(handle.action_id)].count("compensate a") == 3
    await assert_mirrored(karma, [status])

    letters = [
        d
        for d in await read_dead_letters(karma.settings.kafka)
        if d.key == handle.action_id.encode()
    ]
    assert len(letters) == 1
    (letter,) = letters
    assert letter.stage == "compensation"
    assert "not undone: a" in letter.reason
    report = json.loads(letter.value or b"")
    assert report["undone"] == [{"step": "a", "compensation": {"undo": "a-token"}}]


async def test_cancelling_mid_saga_compensates_then_ends_cancelled(karma: EmbeddedKarma) -> None:
    # Steps long enough for the cancellation to reach the running one (by heartbeat).
    handle = await karma.client.request("test.saga", {"step_seconds": 4})
    status = await cancel_during_step_b(handle)
    outcome = await asyncio.wait_for(handle.result(), 60)
    assert outcome.state is ActionState.CANCELLED
    assert event_types(status) == [
        R, A, S, P, COMPENSATING, STEP, COMPENSATED, EventType.CANCELLED,
    ]  # fmt: skip
    assert status.transitions[4].attrs["error"]["type"] == "cancelled"
    assert [w for w, _ in calls_of(handle.action_id)] == ["run a", "run b", "compensate a"]
    await assert_mirrored(karma, [status])


async def test_a_worker_killed_mid_compensation_resumes_the_rollback(
    karma: EmbeddedKarma, tmp_path: Path
) -> None:
    queue = unique("saga-crash")
    env = karma_env(karma.settings, KARMA_TEMPORAL__TASK_QUEUE=queue)
    first = KarmaProcess(["worker"], env, tmp_path / "worker-1.log")
    await first.wait_for_output("worker on task queue")
    handle = await karma.client.request(
        "demo.provision",
        {"fail_at": "activate", "step_seconds": 0, "compensate_seconds": 2},
        task_queue=queue,
    )
    async with asyncio.timeout(60):  # configure undone; reserve's compensation is running
        while True:
            if STEP in event_types(await handle.status()):
                break
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    first.kill()
    outcome, status = await finish_on_a_new_worker(
        handle, env, tmp_path / "worker-2.log", timeout=120
    )
    assert outcome.state is ActionState.FAILED
    assert event_types(status)[-5:] == [COMPENSATING, STEP, STEP, COMPENSATED, EventType.FAILED]
    steps = [e.attrs["step"] for e in status.transitions if e.event_type is STEP]
    assert steps == ["configure", "reserve"]  # each once, in reverse order
    await assert_mirrored(karma, [status])


async def test_an_unnecessary_action_is_skipped_with_its_reason(karma: EmbeddedKarma) -> None:
    handle = await karma.client.request("test.maybe")
    outcome = await asyncio.wait_for(handle.result(), 60)
    assert outcome.state is ActionState.SKIPPED
    assert outcome.reason == "already in the desired state"
    assert outcome.outputs == {"done": False}
    status = await handle.status()
    assert event_types(status) == [R, A, S, EventType.SKIPPED]
    assert status.transitions[-1].attrs["reason"] == "already in the desired state"

    saga = await karma.client.request("demo.provision", {"already_provisioned": True})
    skipped = await asyncio.wait_for(saga.result(), 60)
    assert skipped.state is ActionState.SKIPPED
    assert skipped.reason == "svc-1 is already provisioned"
    assert set(skipped.outputs) == {"reservation", "config_version", "features", "endpoint"}
    await assert_mirrored(karma, [status, await saga.status()])
    assert (await reached(saga, ActionState.SKIPPED)).state is ActionState.SKIPPED


async def test_a_cancellation_while_a_step_finishes_anyway_starts_no_further_step(
    karma: EmbeddedKarma,
) -> None:
    # Steps shorter than the heartbeat interval: b completes despite the cancellation.
    handle = await karma.client.request("test.saga", {"step_seconds": 1})
    status = await cancel_during_step_b(handle)
    outcome = await asyncio.wait_for(handle.result(), 60)
    assert outcome.state is ActionState.CANCELLED
    assert "run c" not in [w for w, _ in calls_of(handle.action_id)]
    assert event_types(status)[-4:] == [STEP, STEP, COMPENSATED, EventType.CANCELLED]
    await assert_mirrored(karma, [status])
