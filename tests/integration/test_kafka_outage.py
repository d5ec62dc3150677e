"""Transitions wait in the workflow's outbox while Kafka is unreachable, and the action
does not finish before Kafka has acknowledged all of them."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable

from temporalio.api.enums.v1 import EventType as EventTypeProto

from karma.lifecycle import ActionState
from tests.support.checks import assert_mirrored
from tests.support.kafka import transitions_on_kafka
from tests.support.waiting import reached
from workers.embedded import EmbeddedKarma

OUTAGE_SECONDS = 15


async def test_an_action_waits_for_kafka_and_then_completes(karma: EmbeddedKarma) -> None:
    broker = karma.servers.kafka.process.pid
    assert broker is not None
    os.kill(broker, signal.SIGSTOP)  # unreachable: connections hang, nothing answers
    try:
        handle = await karma.client.request("log", {"message": "during the outage"})
        result = asyncio.ensure_future(handle.result())
        done, _ = await asyncio.wait([result], timeout=OUTAGE_SECONDS)
        assert not done, "the action finished before Kafka acknowledged its transitions"
        status = await handle.status()
        assert status.state is ActionState.SUCCEEDED  # the work is done and recorded...
        assert status.emitted_seq < len(status.transitions)  # ...but not yet on Kafka
    finally:
        os.kill(broker, signal.SIGCONT)
    outcome = await asyncio.wait_for(result, 120)
    assert outcome.state is ActionState.SUCCEEDED
    status = await handle.status()
    assert status.emitted_seq == len(status.transitions)
    await assert_mirrored(karma, [status])


async def test_an_action_cancelled_while_kafka_is_down_ends_cancelled(
    karma: EmbeddedKarma, report: Callable[[str], None]
) -> None:
    """The cancel lands while the WAITING transition is in the durable emit path: the
    action still records CANCELLED and publishes it once Kafka is back."""
    broker = karma.servers.kafka.process.pid
    assert broker is not None
    os.kill(broker, signal.SIGSTOP)
    try:
        handle = await karma.client.request("test.await", {"external_id": "outage"})
        await reached(handle, ActionState.WAITING, timeout=60)
        await asyncio.sleep(8)  # the fast emit gave up: the durable activity is retrying
        await handle.cancel()
        await asyncio.sleep(2)
    finally:
        os.kill(broker, signal.SIGCONT)
    outcome = await asyncio.wait_for(handle.result(), 120)
    assert outcome.state is ActionState.CANCELLED  # not a failed workflow
    status = await handle.status()
    assert status.emitted_seq == len(status.transitions)
    # Every copy of every transition on Kafka is byte-identical (a workflow task retried
    # during the outage records the same times), and the ledger holds each once, as recorded.
    on_kafka = (await transitions_on_kafka(karma.settings.kafka, [handle.action_id]))[
        handle.action_id
    ]
    recorded = {e.event_id: e.model_dump_json().encode() for e in status.transitions}
    assert {m.json()["event_id"] for m in on_kafka} == set(recorded)
    for message in on_kafka:
        assert message.value == recorded[message.json()["event_id"]], message.value
    ids = [e.event_id for e in status.transitions]
    async with asyncio.timeout(30):
        while True:
            rows = await asyncio.to_thread(karma.ledger.transitions, [handle.action_id])
            if len(rows) >= len(ids):
                break
            await asyncio.sleep(0.2)
    assert [f"{r.action_id}:{r.seq}" for r in rows] == ids
    assert [r.event_type for r in rows][-1] == "action.cancelled"
    assert await asyncio.to_thread(karma.ledger.count_events, [handle.action_id]) == len(ids)
    assert [r.attrs for r in rows] == [e.attrs for e in status.transitions]
    assert [r.ts for r in rows] == [e.ts for e in status.transitions]  # both UTC
    retried = [
        e.event_id
        async for e in karma.temporal.get_workflow_handle(handle.workflow_id).fetch_history_events()
        if e.event_type
        in (
            EventTypeProto.EVENT_TYPE_WORKFLOW_TASK_FAILED,
            EventTypeProto.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT,
        )
    ]
    report(
        f"cancel while Kafka was frozen: {len(retried)} workflow task(s) failed and retried; "
        f"every Kafka copy of the {len(ids)} transitions byte-identical"
    )
