"""Stateful actions on the real stack: progress per iteration, continue-as-new with the
action id and seq carried over, state migration after an executor upgrade."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from temporalio.client import WorkflowExecutionStatus

from karma.client import ActionHandle
from karma.ids import workflow_id_for
from karma.lifecycle import ActionState, EventType
from tests.support.actions import CounterExecutor
from tests.support.kafka import transitions_on_kafka
from workers.embedded import EmbeddedKarma

LEDGER_TIMEOUT = 30.0


async def ledger_rows(karma: EmbeddedKarma, action_id: str, count: int) -> list[object]:
    deadline = asyncio.get_running_loop().time() + LEDGER_TIMEOUT
    while True:
        rows = await asyncio.to_thread(karma.ledger.transitions, [action_id])
        if len(rows) >= count or asyncio.get_running_loop().time() > deadline:
            return list(rows)
        await asyncio.sleep(0.1)


async def test_iterations_continue_as_new_with_seq_and_state_carried_over(
    karma: EmbeddedKarma,
) -> None:
    handle = await karma.client.request(
        "demo.drain", {"total": 12, "batch": 2, "pause_seconds": 0.1}
    )
    seen = [event async for event in handle.transitions(poll_interval=0.05)]
    outcome = await asyncio.wait_for(handle.result(), 60)
    assert outcome.state is ActionState.SUCCEEDED
    assert outcome.outputs == {"moved": 12, "batches": 6}

    expected = [
        EventType.REQUESTED,
        EventType.ACCEPTED,
        EventType.STARTED,
        *[EventType.PROGRESS] * 5,
        EventType.SUCCEEDED,
    ]
    # Followed across runs: every transition once, in seq order.
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
    assert [e.event_type for e in seen][-1] is EventType.SUCCEEDED
    rows = await ledger_rows(karma, handle.action_id, len(expected))
    assert [(r.seq, r.event_type) for r in rows] == [  # type: ignore[attr-defined]
        (i + 1, t.value) for i, t in enumerate(expected)
    ]
    assert await asyncio.to_thread(karma.ledger.count_events, [handle.action_id]) == len(expected)
    progress = [r.attrs for r in rows if r.event_type == EventType.PROGRESS.value]  # type: ignore[attr-defined]
    assert [p["iteration"] for p in progress] == [1, 2, 3, 4, 5]
    assert [p["percent"] for p in progress] == [16.7, 33.3, 50.0, 66.7, 83.3]

    # The first run continued as new after 4 iterations: two runs, one action id.
    query = f"WorkflowId = '{workflow_id_for(handle.action_id)}'"
    async with asyncio.timeout(30):
        while True:
            runs = [wf async for wf in karma.temporal.list_workflows(query)]
            if len(runs) == 2:
                break
            await asyncio.sleep(0.2)
    assert {r.status for r in runs} == {
        WorkflowExecutionStatus.COMPLETED,
        WorkflowExecutionStatus.CONTINUED_AS_NEW,
    }


async def test_state_written_by_an_older_executor_version_is_migrated(
    karma: EmbeddedKarma, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = await karma.client.request("test.counter", {"target": 6, "pause": 0.3})
    async with asyncio.timeout(30):
        while True:
            progress = [
                e for e in (await handle.status()).transitions if e.event_type is EventType.PROGRESS
            ]
            if len(progress) >= 2:
                break
            await asyncio.sleep(0.05)
    monkeypatch.setattr(CounterExecutor, "state_version", 2)  # the worker is upgraded
    outcome = await asyncio.wait_for(handle.result(), 60)
    assert outcome.state is ActionState.SUCCEEDED
    assert outcome.outputs == {"count": 6, "migrated_from": 1}
    rows = await ledger_rows(karma, handle.action_id, 9)
    assert [r.event_type for r in rows] == [  # type: ignore[attr-defined]
        "action.requested",
        "action.accepted",
        "action.started",
        *["action.progress"] * 5,
        "action.succeeded",
    ]


async def test_a_busy_stateful_action_can_be_cancelled(karma: EmbeddedKarma) -> None:
    handle = await karma.client.request("test.counter", {"target": 100_000, "pause": 0})
    async with asyncio.timeout(30):
        while True:
            progress = [
                e for e in (await handle.status()).transitions if e.event_type is EventType.PROGRESS
            ]
            if len(progress) >= 5:  # past a continue-as-new
                break
            await asyncio.sleep(0.05)
    await handle.cancel()
    outcome = await asyncio.wait_for(handle.result(), 60)
    assert outcome.state is ActionState.CANCELLED
    rows = await asyncio.to_thread(karma.ledger.transitions, [handle.action_id])
    async with asyncio.timeout(30):
        while not rows or rows[-1].event_type != EventType.CANCELLED.value:
            await asyncio.sleep(0.2)
            rows = await asyncio.to_thread(karma.ledger.transitions, [handle.action_id])
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))


async def test_cancellations_racing_workflow_tasks_publish_only_what_the_history_keeps(
    karma: EmbeddedKarma, report: Callable[[str], None]
) -> None:
    """A busy stateful action records progress in nearly every workflow task, so a cancel
    often arrives while a task that would continue as new runs; the server refuses that
    task, and its rerun sees the cancel and records CANCELLED under the seq the refused
    task gave to a progress. Nothing of a refused task may have reached Kafka."""
    handles = [
        await karma.client.request("test.counter", {"target": 100_000, "pause": 0})
        for _ in range(10)
    ]

    async def cancel_after(handle: ActionHandle, seq: int) -> None:
        async with asyncio.timeout(60):
            while True:
                transitions = (await handle.status()).transitions
                if transitions and transitions[-1].seq >= seq:
                    break
                await asyncio.sleep(0.02)
        await handle.cancel()
        outcome = await asyncio.wait_for(handle.result(), 60)
        assert outcome.state is ActionState.CANCELLED

    await asyncio.gather(*(cancel_after(h, 6 + 2 * i) for i, h in enumerate(handles)))
    on_kafka = await transitions_on_kafka(karma.settings.kafka, [h.action_id for h in handles])
    published = 0
    for handle in handles:
        # The status keeps the latest run's transitions; each earlier seq is a progress.
        status = (await handle.status()).transitions
        kept = {seq: EventType.PROGRESS.value for seq in range(4, status[0].seq)}
        kept.update({1: "action.requested", 2: "action.accepted", 3: "action.started"})
        kept.update({e.seq: e.event_type.value for e in status})
        assert status[-1].event_type is EventType.CANCELLED
        copies: dict[int, set[bytes]] = {}
        for message in on_kafka[handle.action_id]:
            assert message.value is not None
            copies.setdefault(message.json()["seq"], set()).add(message.value)
        assert {seq: len(c) for seq, c in copies.items() if len(c) > 1} == {}, handle.action_id
        on_broker = {seq: json.loads(next(iter(c)))["event_type"] for seq, c in copies.items()}
        assert on_broker == kept, handle.action_id
        rows = await ledger_rows(karma, handle.action_id, len(kept))
        assert [(r.seq, r.event_type) for r in rows] == sorted(kept.items())  # type: ignore[attr-defined]
        published += len(kept)
    report(
        f"{len(handles)} busy stateful actions cancelled mid-run: {published} transitions, "
        "each on Kafka in the one version the history keeps, the ledger the same"
    )


async def test_a_growing_state_is_packed_then_refused_past_the_limit(
    karma: EmbeddedKarma,
) -> None:
    limits = karma.settings.limits
    # Within the limit once packed: the executor gets back exactly what it wrote.
    until = limits.state_compress_bytes * 4
    packed = await karma.client.request("test.growing", {"until": until})
    outcome = await asyncio.wait_for(packed.result(), 90)
    assert outcome.state is ActionState.SUCCEEDED, outcome.error
    assert outcome.outputs["bytes"] >= until

    grows = await karma.client.request("test.growing", {})
    outcome = await asyncio.wait_for(grows.result(), 120)
    assert outcome.state is ActionState.FAILED
    assert outcome.error is not None and outcome.error.type.value == "payload_too_large"
    assert "KARMA_LIMITS__MAX_STATE_BYTES" in outcome.error.message
    async with asyncio.timeout(LEDGER_TIMEOUT):
        while True:
            rows = await asyncio.to_thread(karma.ledger.transitions, [grows.action_id])
            if rows and rows[-1].event_type == EventType.FAILED.value:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.1)
    sizes = [
        int(r.attrs["message"].split()[0])  # type: ignore[attr-defined]
        for r in rows
        if str(r.attrs.get("message", "")).endswith(" bytes")  # type: ignore[attr-defined]
    ]
    # It went on well past the plain limit (packed, about half the size), one chunk a time.
    assert max(sizes) > limits.max_state_bytes
    assert sizes == list(range(8192, max(sizes) + 1, 8192))
    # While packed it continued as new every few iterations: several runs, one action.
    query = f"WorkflowId = '{workflow_id_for(grows.action_id)}'"
    runs = [wf async for wf in karma.temporal.list_workflows(query)]
    expected_runs = len(sizes) // 10
    assert len(runs) >= expected_runs >= 2
    assert sum(r.status is WorkflowExecutionStatus.CONTINUED_AS_NEW for r in runs) == len(runs) - 1
