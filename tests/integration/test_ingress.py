"""The bridge's ingress on the real stack: requests and callbacks from Kafka, the DLQ."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.dlq import read_dead_letters, replay
from karma.ids import action_id_for_key
from karma.lifecycle import ActionState, EventType
from tests.conftest import unique
from tests.support.checks import assert_mirrored, event_types
from tests.support.kafka import produce
from tests.support.messages import envelope, request, status_of
from workers.embedded import EmbeddedKarma


async def letters_about(karma: EmbeddedKarma, marker: str, count: int) -> list[Any]:
    async with asyncio.timeout(60):
        while True:
            found = [
                letter
                for letter in await read_dead_letters(karma.settings.kafka)
                if marker.encode() in (letter.value or b"")
            ]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.3)


async def test_a_request_on_kafka_completes_through_callbacks_on_kafka(
    karma: EmbeddedKarma,
) -> None:
    """The issue's definition of done: requested on actions.requested, completed by the
    jobs service's events on actions.events, every transition in ClickHouse once."""
    kafka = karma.settings.kafka
    key = unique("req")
    message = request(
        "demo.job",
        {"steps": 2, "step_seconds": 0.1},
        idempotency_key=key,
        entity_id="job:etl",
        tags={"tenant": "foo", "team": "sre"},
    )
    # The same request twice on the topic is one action.
    await produce(kafka, kafka.topics.requested, [message, message], key=key.encode())
    status = await status_of(karma, action_id_for_key(key, "foo"))
    assert status.state is ActionState.SUCCEEDED, status.error
    assert event_types(status) == [
        EventType.REQUESTED,
        EventType.ACCEPTED,
        EventType.STARTED,
        EventType.WAITING,
        EventType.PROGRESS,
        EventType.PROGRESS,
        EventType.SUCCEEDED,
    ]
    first = status.transitions[0]
    assert first.idempotency_key == key
    assert first.entity_id == "job:etl"
    assert first.tags == {
        "team": "sre",
        "action": "demo.job",
        "priority": "normal",
        "tenant": "foo",
    }
    assert first.source.system == "karma"
    assert first.source.ns == {"requested_by": "rules"}
    # Karma's mirrored REQUESTED is on the same topic and must not start anything.
    await asyncio.sleep(1)
    listed = [
        wf.id
        async for wf in karma.temporal.list_workflows(f"WorkflowId = 'action-{status.action_id}'")
    ]
    assert len(listed) == 1
    assert karma.bridge is not None and karma.bridge.requests is not None
    await assert_mirrored(karma, [status])


async def test_a_request_without_key_is_one_action_per_message(karma: EmbeddedKarma) -> None:
    kafka = karma.settings.kafka
    marker = unique("nokey")
    await produce(kafka, kafka.topics.requested, [request("log", {"message": marker})])
    async with asyncio.timeout(60):
        while True:
            found = [
                wf.id
                async for wf in karma.temporal.list_workflows(
                    "KarmaActionType = 'log' AND ExecutionStatus = 'Completed'"
                )
            ]
            statuses = [
                await karma.client.handle(wf.removeprefix("action-")).status() for wf in found
            ]
            mine = [s for s in statuses if s.outputs.get("logged") == marker]
            if mine:
                break
            await asyncio.sleep(0.5)
    assert len(mine) == 1
    assert mine[0].transitions[0].idempotency_key.startswith(f"kafka:{kafka.topics.requested}:")


async def test_bad_requests_go_to_the_dlq_while_good_ones_interleaved_run(
    karma: EmbeddedKarma,
) -> None:
    kafka = karma.settings.kafka
    marker = unique("bad")
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    bad = {
        f"not json {marker}".encode(): "not JSON",
        json.dumps({"event_type": "action.requested", "entity_id": marker}).encode(): "ts:",
        envelope("action.started", entity_id=marker, attrs={"command": "log"}): "event_type:",
        request("no.such.action", {}, entity_id=marker): "unknown action 'no.such.action'",
        request("delay", {"seconds": "soon"}, entity_id=marker): "seconds",
        envelope("action.requested", entity_id=marker, attrs={"args": {}}): "attrs.command:",
        request(
            "log", {"message": marker}, ts=long_ago, attrs={"ttl_sec": 60}, entity_id=marker
        ): "attrs.ttl_sec: expired",
    }
    keys = [unique("good") for _ in range(len(bad) + 1)]
    good = [request("log", {"message": marker}, idempotency_key=k) for k in keys]
    interleaved = [good[0]]
    for i, value in enumerate(bad):
        interleaved += [value, good[i + 1]]
    await produce(kafka, kafka.topics.requested, interleaved)

    for key in keys:
        status = await status_of(karma, action_id_for_key(key))
        assert status.state is ActionState.SUCCEEDED
    letters = await letters_about(karma, marker, len(bad))
    assert {letter.value for letter in letters} == set(bad)
    for letter in letters:
        assert bad[letter.value] in letter.reason, (letter.reason, letter.value)
        assert letter.stage == "ingress.requests"
        assert letter.topic == kafka.topics.requested
        assert letter.offset >= 0
        assert letter.key == b"test"


async def test_unusable_callbacks_go_to_the_dlq_and_an_orphan_can_be_replayed(
    karma: EmbeddedKarma,
) -> None:
    kafka = karma.settings.kafka
    marker = unique("cb")
    ended = await karma.client.request("log", {"message": marker})
    await ended.result()
    external = unique("late")
    orphan = envelope(
        "done", event_id=f"{marker}:orphan", attrs={"external_workflow_id": external, "answer": 7}
    )
    bad = {
        f"{{not json {marker}".encode(): "not JSON",
        envelope("done", entity_id=marker): "names neither its action",
        envelope("done", action_id=f"act_missing_{marker}"): "which does not exist",
        envelope("done", action_id=ended.action_id, entity_id=marker): "has ended",
        orphan: "orphan event: no running action waits for external id",
    }
    waiting = await karma.client.request("test.await", {"external_id": unique("ext")})
    step = envelope(
        "step", action_id=waiting.action_id, event_id=f"{marker}:s", attrs={"percent": 5}
    )
    await produce(kafka, kafka.topics.callbacks, [*bad, step])
    letters = await letters_about(karma, marker, len(bad))
    assert {letter.value for letter in letters} == set(bad)
    for letter in letters:
        assert bad[letter.value] in letter.reason, (letter.reason, letter.value)
        assert letter.stage == "ingress.callbacks"
        assert letter.topic == kafka.topics.callbacks
    async with asyncio.timeout(30):  # the good event behind the bad ones was delivered
        while True:
            if EventType.PROGRESS in event_types(await waiting.status()):
                break
            await asyncio.sleep(0.2)
    await waiting.cancel()

    # After the fix (the action now exists and waits), replaying the orphan delivers it;
    # replaying it twice delivers it once.
    late = await karma.client.request("test.await", {"external_id": external})
    (orphan_letter,) = [letter for letter in letters if letter.value == orphan]
    replayed = await replay(kafka, [orphan_letter.position, orphan_letter.position])
    assert [r.position for r in replayed] == [orphan_letter.position]
    await replay(kafka, [orphan_letter.position])
    outcome = await asyncio.wait_for(late.result(), 60)
    assert outcome.state is ActionState.SUCCEEDED
    assert outcome.outputs["answer"] == 7
    await assert_mirrored(karma, [await late.status()])
