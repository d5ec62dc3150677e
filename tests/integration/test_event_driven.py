"""Event-driven actions on the real stack: hand-off, events as signals, Kafka callbacks."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from karma.client import ActionHandle
from karma.errors import ErrorType
from karma.lifecycle import ActionState, EventType
from karma.status import ActionStatus
from tests.conftest import unique
from tests.support.checks import assert_mirrored, event_types
from tests.support.kafka import produce
from tests.support.waiting import reached
from workers.embedded import EmbeddedKarma

R, A, S, W = EventType.REQUESTED, EventType.ACCEPTED, EventType.STARTED, EventType.WAITING
P = EventType.PROGRESS


async def finished(handle: ActionHandle, timeout: float = 60) -> ActionStatus:
    await asyncio.wait_for(handle.result(), timeout)
    return await handle.status()


def callback(event_type: str, **fields: Any) -> bytes:
    return json.dumps(
        {"ts": datetime.now(UTC).isoformat(), "event_type": event_type, **fields}
    ).encode()


async def test_a_job_completes_through_kafka_callbacks_with_progress(karma: EmbeddedKarma) -> None:
    handle = await karma.client.request(
        "demo.job", {"steps": 2, "step_seconds": 0.1}, entity_id="job:nightly"
    )
    status = await finished(handle)
    assert status.state is ActionState.SUCCEEDED, status.error
    assert event_types(status) == [R, A, S, W, P, P, EventType.SUCCEEDED]
    waiting = status.transitions[3]
    job_id = waiting.attrs["external_workflow_id"]
    assert job_id.startswith("job-")
    assert waiting.attrs["outputs"] == {"job_id": job_id}
    assert [e.attrs["percent"] for e in status.transitions[4:6]] == [33.3, 66.7]
    assert status.transitions[4].attrs["event_id"] == f"{job_id}:1"
    assert status.outputs == {"job_id": job_id, "result": {"entity": "job:nightly"}}
    assert status.external_workflow_id == job_id
    await assert_mirrored(karma, [status])


async def test_a_failure_event_fails_the_action_with_the_same_output_keys(
    karma: EmbeddedKarma,
) -> None:
    handle = await karma.client.request("demo.job", {"steps": 0, "outcome": "failed"})
    status = await finished(handle)
    assert status.state is ActionState.FAILED
    assert event_types(status) == [R, A, S, W, EventType.FAILED]
    assert status.error is not None
    assert status.error.type is ErrorType.EXTERNAL
    assert status.error.message == "the job failed"
    assert set(status.outputs) == {"job_id", "result"}
    assert status.outputs["result"] is None
    await assert_mirrored(karma, [status])


async def test_signalled_events_progress_ignored_duplicate_then_complete(
    karma: EmbeddedKarma,
) -> None:
    external = unique("ext")
    handle = await karma.client.request("test.await", {"external_id": external})
    await reached(handle, ActionState.WAITING)
    await handle.callback({"event_type": "chatter", "event_id": "e1"})
    await handle.callback({"event_type": "unreadable", "event_id": "e0"})  # on_callback raises
    step = {"event_type": "step", "event_id": "e2", "attrs": {"percent": 50, "message": "half"}}
    await handle.callback(step)
    await handle.callback(step)  # redelivered: the same event_id is dropped
    await handle.callback({"event_type": "done", "attrs": {"answer": 42}})
    status = await finished(handle)
    assert status.state is ActionState.SUCCEEDED
    assert event_types(status) == [R, A, S, W, P, EventType.SUCCEEDED]
    progress = status.transitions[4]
    assert progress.attrs == {"percent": 50.0, "message": "half", "event_id": "e2"}
    assert status.outputs == {"external": external, "answer": 42, "last_seen": None}
    await assert_mirrored(karma, [status])


async def test_an_event_before_the_wait_is_buffered(karma: EmbeddedKarma) -> None:
    handle = await karma.client.request(
        "test.await", {"external_id": unique("ext"), "hand_off_after": 1.5}
    )
    await reached(handle, ActionState.STARTED)
    await handle.callback({"event_type": "done", "attrs": {"answer": "early"}})
    assert (await handle.status()).pending_callbacks == 1
    status = await finished(handle)
    assert status.state is ActionState.SUCCEEDED
    assert event_types(status) == [R, A, S, W, EventType.SUCCEEDED]
    assert status.outputs["answer"] == "early"


async def test_no_completion_in_time_ends_timed_out(karma: EmbeddedKarma) -> None:
    external = unique("ext")
    handle = await karma.client.request("test.await", {"external_id": external, "wait_seconds": 1})
    status = await finished(handle)
    assert status.state is ActionState.TIMED_OUT
    assert event_types(status) == [R, A, S, W, EventType.TIMED_OUT]
    assert status.error is not None
    assert status.error.type is ErrorType.TIMEOUT
    assert external in status.error.message
    assert status.outputs == {"external": external, "answer": None, "last_seen": None}
    await assert_mirrored(karma, [status])


async def test_a_failure_reported_by_signal_keeps_partial_outputs(karma: EmbeddedKarma) -> None:
    handle = await karma.client.request("test.await", {"external_id": unique("ext")})
    await reached(handle, ActionState.WAITING)
    await handle.callback({"event_type": "broken", "attrs": {"error": "disk full"}})
    status = await finished(handle)
    assert status.state is ActionState.FAILED
    assert status.error is not None and status.error.message == "disk full"
    assert status.outputs["last_seen"] == "broken"


async def test_an_event_naming_only_the_external_id_finds_its_action(
    karma: EmbeddedKarma,
) -> None:
    """The event is published before the action even exists: the ingress keeps resolving
    the external id until the action waits and its search attribute is visible."""
    kafka = karma.settings.kafka
    external = unique("ext")
    progress = callback(
        "step", event_id=f"{external}:1", attrs={"external_workflow_id": external, "percent": 10}
    )
    done = callback(
        "done", event_id=f"{external}:2", attrs={"external_workflow_id": external, "answer": "ok"}
    )
    await produce(kafka, kafka.topics.callbacks, [progress, done], key=external.encode())
    handle = await karma.client.request("test.await", {"external_id": external})
    status = await finished(handle)
    assert status.state is ActionState.SUCCEEDED
    assert event_types(status) == [R, A, S, W, P, EventType.SUCCEEDED]
    assert status.outputs["answer"] == "ok"
    await assert_mirrored(karma, [status])


async def test_anonymous_job_events_are_correlated_by_job_id(karma: EmbeddedKarma) -> None:
    handle = await karma.client.request("demo.job", {"steps": 1, "anonymous": True})
    status = await finished(handle)
    assert status.state is ActionState.SUCCEEDED, status.error
    assert event_types(status) == [R, A, S, W, P, EventType.SUCCEEDED]
