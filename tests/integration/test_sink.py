"""The ledger sink: dead letters, duplicates, the current-state view."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from bridge.ledger_schema import KafkaPosition, ledger_row
from karma.envelope import MAX_ID_CHARS, Transition
from karma.lifecycle import EventType
from tests.conftest import unique
from tests.support.checks import assert_mirrored
from tests.support.kafka import produce, read_topics
from workers.embedded import EmbeddedKarma


async def test_unusable_messages_go_to_the_dlq_and_the_sink_keeps_going(
    karma: EmbeddedKarma,
) -> None:
    kafka = karma.settings.kafka
    marker = unique("bad")
    bad = {
        f"not json {marker}".encode(): "not JSON",
        json.dumps([marker]).encode(): "expected a JSON object, got an array",
        json.dumps(
            {
                "ts": "2025-08-10T16:42:00Z",
                "event_type": "action.started",
                "action_id": marker,
                "seq": "three",
                "source": {"system": "karma"},
            }
        ).encode(): "seq: Input should be a valid integer",
        json.dumps(
            {
                "ts": "yesterday",
                "event_type": "action.started",
                "action_id": marker,
                "seq": 3,
                "source": {"system": "karma"},
            }
        ).encode(): "ts: Input should be a valid datetime",
    }
    # Not a transition, on a topic that carries only transitions: dead-lettered too.
    foreign_request = json.dumps(
        {
            "ts": "2025-08-10T16:42:00Z",
            "event_type": "action.requested",
            "entity_id": marker,
            "source": {"system": "rules-fsm"},
            "attrs": {"command": "log"},
        }
    ).encode()
    bad[foreign_request] = "action_id: Field required"
    await produce(kafka, kafka.topics.progress, list(bad))

    handle = await karma.client.request("log", {"message": marker})
    await asyncio.wait_for(handle.result(), 60)
    await assert_mirrored(karma, [await handle.status()])  # the sink kept going

    # The dead letters may belong to a later batch than the action's transitions.
    async with asyncio.timeout(30):
        while True:
            letters = [
                m
                for m in await read_topics(kafka, [kafka.topics.dlq])
                if marker.encode() in (m.value or b"")
            ]
            if len(letters) >= len(bad):
                break
            await asyncio.sleep(0.2)
    assert {m.value for m in letters} == set(bad)  # original bytes, and only the bad ones
    for letter in letters:
        assert letter.key == b"test"
        assert bad[letter.value or b""] in letter.headers["karma.dlq.reason"].decode()
        assert letter.headers["karma.dlq.topic"] == kafka.topics.progress.encode()
        assert letter.headers["karma.dlq.stage"] == b"ledger"
        assert int(letter.headers["karma.dlq.offset"]) >= 0


async def test_the_ledger_stores_a_transition_once_however_often_it_arrives(
    karma: EmbeddedKarma,
) -> None:
    action_id = unique("act")
    events = [
        Transition(
            ts=datetime.now(UTC), event_type=t, action_id=action_id, seq=i, tags={"action": "log"}
        )
        for i, t in enumerate([EventType.REQUESTED, EventType.ACCEPTED, EventType.STARTED], start=1)
    ]
    rows = [ledger_row(e, KafkaPosition("actions.progress", 0, i)) for i, e in enumerate(events)]
    ledger = karma.ledger
    assert await asyncio.to_thread(ledger.write, rows[:2] + rows[:1]) == 2  # duplicate in a batch
    assert await asyncio.to_thread(ledger.write, rows) == 1  # redelivered after a crash
    assert await asyncio.to_thread(ledger.count_events, [action_id]) == 3
    assert await asyncio.to_thread(ledger.current_states, [action_id]) == {action_id: "STARTED"}


async def test_a_full_batch_of_the_longest_ids_is_written(karma: EmbeddedKarma) -> None:
    """Ids are inlined into the ledger's queries, which ClickHouse caps at 256 KiB: a batch
    of 1,000 transitions whose action ids are as long as allowed (and full of characters the
    query must escape) once stalled the sink, retrying the same batch for ever."""
    prefix = unique("act") + "'\\"
    ids = [f"{prefix}{i:04d}".ljust(MAX_ID_CHARS, "\\") for i in range(1000)]
    rows = [
        ledger_row(
            Transition(ts=datetime.now(UTC), event_type=EventType.REQUESTED, action_id=a, seq=1),
            KafkaPosition("actions.requested", 0, i),
        )
        for i, a in enumerate(ids)
    ]
    ledger = karma.ledger
    assert await asyncio.to_thread(ledger.write, rows) == 1000
    assert await asyncio.to_thread(ledger.write, rows) == 0  # all known: none again
    assert await asyncio.to_thread(ledger.count_events, ids) == 1000
    states = await asyncio.to_thread(ledger.current_states, ids)
    assert states == dict.fromkeys(ids, "REQUESTED")
    events = await asyncio.to_thread(ledger.transitions, ids)
    assert [e.action_id for e in events] == sorted(ids)
    assert await asyncio.to_thread(ledger.complete, ids) == set()  # none is terminal
