"""Assertions on what really reached Kafka and ClickHouse."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from karma.lifecycle import EventType, TopicKind
from karma.status import ActionStatus
from tests.support.kafka import transitions_on_kafka
from workers.embedded import EmbeddedKarma

LEDGER_TIMEOUT = 30.0


async def assert_mirrored(karma: EmbeddedKarma, statuses: Sequence[ActionStatus]) -> None:
    """Every transition of every action is on Kafka (right topic, seq order) and in
    ClickHouse exactly once, identical to the workflow's own record."""
    settings = karma.settings.kafka
    topic_of = {
        TopicKind.REQUESTED: settings.topics.requested,
        TopicKind.PROGRESS: settings.topics.progress,
        TopicKind.RESULT: settings.topics.result,
    }
    on_kafka = await transitions_on_kafka(settings, [s.action_id for s in statuses])
    for status in statuses:
        recorded = {e.event_id: e for e in status.transitions}
        assert [e.seq for e in status.transitions] == list(range(1, len(recorded) + 1))
        messages = on_kafka[status.action_id]
        assert {m.json()["event_id"] for m in messages} == set(recorded), status.action_id
        for message in messages:
            event = recorded[message.json()["event_id"]]
            assert message.topic == topic_of[event.event_type.topic_kind]
            assert message.json() == event.model_dump(mode="json"), message
        for topic in topic_of.values():
            # At least once: a transition may be published again (after a cancelled or
            # lost attempt), but each first appears in seq order.
            seqs = list(dict.fromkeys(m.json()["seq"] for m in messages if m.topic == topic))
            assert seqs == sorted(seqs), f"{topic} out of order for {status.action_id}"
    await assert_in_ledger_once(karma, statuses)


async def assert_in_ledger_once(karma: EmbeddedKarma, statuses: Sequence[ActionStatus]) -> None:
    ids = [s.action_id for s in statuses]
    expected = [
        e.event_id for s in sorted(statuses, key=lambda s: s.action_id) for e in s.transitions
    ]
    deadline = asyncio.get_running_loop().time() + LEDGER_TIMEOUT
    while True:
        events = await asyncio.to_thread(karma.ledger.transitions, ids)
        if len(events) >= len(expected) or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.1)
    assert [f"{e.action_id}:{e.seq}" for e in events] == expected
    assert await asyncio.to_thread(karma.ledger.count_events, ids) == len(expected)
    by_id = {f"{e.action_id}:{e.seq}": e for e in events}
    for status in statuses:
        for event in status.transitions:
            row = by_id[event.event_id]
            assert row.event_type == event.event_type.value
            assert row.attrs == event.attrs
    states = await asyncio.to_thread(karma.ledger.current_states, ids)
    assert states == {s.action_id: s.state.value for s in statuses}


def event_types(status: ActionStatus) -> list[EventType]:
    return [e.event_type for e in status.transitions]
