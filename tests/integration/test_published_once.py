"""On the normal path (nothing failed), a plain Kafka consumer sees every transition once:
every demo scenario, and a cancellation of every kind of action."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from collections.abc import Callable

from karma.client import ActionHandle
from karma.demo import run_scenario, scenarios
from karma.ids import event_id_for
from karma.lifecycle import ActionState, EventType
from tests.support.kafka import transitions_on_kafka
from tests.support.waiting import reached
from workers.embedded import EmbeddedKarma


async def cancelled_when(handle: ActionHandle, state: ActionState, *, after: float = 0) -> str:
    await reached(handle, state, timeout=60)
    await asyncio.sleep(after)
    await handle.cancel()
    outcome = await asyncio.wait_for(handle.result(), 60)
    assert outcome.state is ActionState.CANCELLED, outcome
    return handle.action_id


async def cancellations(karma: EmbeddedKarma) -> list[str]:
    """One cancellation of each kind, where each kind spends its time."""
    client = karma.client
    sync = await client.request("delay", {"seconds": 60})
    event_driven = await client.request("test.await", {"external_id": "never", "wait_seconds": 60})
    saga = await client.request("test.saga", {"step_seconds": 1.0})
    interactive = await client.request("demo.approval", {"change": "cancel me"})
    stateful = await client.request("test.counter", {"target": 1000, "pause": 0.2})
    return list(
        await asyncio.gather(
            cancelled_when(sync, ActionState.STARTED, after=0.5),
            cancelled_when(event_driven, ActionState.WAITING),
            cancelled_when(saga, ActionState.STARTED, after=1.5),  # during step b
            cancelled_when(interactive, ActionState.WAITING),
            cancelled_when(stateful, ActionState.STARTED, after=1.0),
        )
    )


async def test_each_transition_reaches_a_plain_consumer_once(
    karma: EmbeddedKarma, report: Callable[[str], None]
) -> None:
    assert karma.reference_service is not None
    ran = await asyncio.gather(
        *(run_scenario(karma, s) for s in scenarios(karma.reference_service.url))
    )
    for r in ran:
        assert r.outcome.state is r.scenario.expected, r.scenario.title
    expected = {r.handle.action_id: r.event_ids for r in ran}
    for action_id in await cancellations(karma):
        status = await karma.client.handle(action_id).status()
        last = status.transitions[-1]
        assert last.event_type is EventType.CANCELLED
        expected[action_id] = [event_id_for(action_id, n) for n in range(1, last.seq + 1)]

    on_kafka = await transitions_on_kafka(karma.settings.kafka, expected)
    total = 0
    for action_id, event_ids in expected.items():
        seen = Counter(m.json()["event_id"] for m in on_kafka[action_id])
        twice = {e: n for e, n in seen.items() if n > 1}
        assert not twice, f"{action_id} published more than once: {twice}"
        assert sorted(seen) == sorted(event_ids), action_id
        total += len(event_ids)
    report(
        f"{len(expected)} actions (10 demo scenarios, 5 cancellations), {total} transitions, "
        "each on Kafka exactly once"
    )


async def test_a_cancellation_landing_while_kafka_has_not_answered_publishes_once(
    karma: EmbeddedKarma, report: Callable[[str], None]
) -> None:
    """The broker pauses for less than an emit's timeout (a slow answer, not a failure), so
    an emit is in flight when the cancel lands: it is waited for, not abandoned (Kafka
    would acknowledge the abandoned batch anyway, and the batch, still pending, would be
    published a second time with CANCELLED)."""
    broker = karma.servers.kafka.process.pid
    assert broker is not None
    assert karma.settings.kafka.emit_timeout_s > 3
    handle = await karma.client.request("test.counter", {"target": 1000, "pause": 0.2})
    await reached(handle, ActionState.STARTED, timeout=60)
    await asyncio.sleep(1)  # a progress transition every 0.2 s
    os.kill(broker, signal.SIGSTOP)
    try:
        await asyncio.sleep(0.5)
        await handle.cancel()
        await asyncio.sleep(1)
    finally:
        os.kill(broker, signal.SIGCONT)
    outcome = await asyncio.wait_for(handle.result(), 60)
    assert outcome.state is ActionState.CANCELLED
    status = await handle.status()
    on_kafka = (await transitions_on_kafka(karma.settings.kafka, [handle.action_id]))[
        handle.action_id
    ]
    seen = Counter(m.json()["event_id"] for m in on_kafka)
    assert seen == Counter(e.event_id for e in status.transitions), seen
    report(f"cancel during a slow emit: {len(seen)} transitions, each on Kafka once")
