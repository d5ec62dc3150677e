"""The demo's scenarios on the real stack: workflow results, Kafka and ClickHouse agree."""

from __future__ import annotations

import asyncio
import logging

import pytest
from temporalio.client import WorkflowExecutionStatus

from karma.client import ActionHandle
from karma.errors import ErrorType
from karma.lifecycle import ActionState, EventType
from karma.status import ActionStatus
from tests.conftest import unique
from tests.support.checks import assert_in_ledger_once, assert_mirrored, event_types
from tests.support.kafka import read_topics
from workers.embedded import EmbeddedKarma

R, A, S = EventType.REQUESTED, EventType.ACCEPTED, EventType.STARTED


async def finished(handle: ActionHandle) -> ActionStatus:
    await asyncio.wait_for(handle.result(), 60)
    return await handle.status()


async def test_success_is_mirrored_exactly_once(karma: EmbeddedKarma) -> None:
    handle = await karma.client.request(
        "log", {"message": "hello"}, entity_id="job:abc", tenant="foo", correlation_id="slot:1"
    )
    outcome = await asyncio.wait_for(handle.result(), 60)
    assert outcome.state is ActionState.SUCCEEDED
    assert outcome.outputs == {"logged": "hello"}
    status = await handle.status()
    assert event_types(status) == [R, A, S, EventType.SUCCEEDED]
    # The workflow ends only after Kafka acknowledged every transition.
    assert status.emitted_seq == 4
    first = status.transitions[0]
    assert first.entity_id == "job:abc"
    assert first.correlation_id == "slot:1"
    assert first.tags == {"action": "log", "priority": "normal", "tenant": "foo"}
    assert first.attrs == {"command": "log", "args": {"message": "hello"}}
    assert status.transitions[1].attrs["args"] == {"message": "hello", "level": "info"}
    assert status.transitions[-1].attrs["outputs"] == {"logged": "hello"}
    await assert_mirrored(karma, [status])


async def test_each_retried_attempt_emits_retrying(karma: EmbeddedKarma) -> None:
    status = await finished(await karma.client.request("demo.flaky", {"failures": 2}))
    assert status.state is ActionState.SUCCEEDED
    assert event_types(status) == [
        R,
        A,
        S,
        EventType.RETRYING,
        EventType.RETRYING,
        EventType.SUCCEEDED,
    ]
    retrying = status.transitions[3:5]
    assert [e.attrs["attempt"] for e in retrying] == [1, 2]
    assert [e.attrs["error"]["type"] for e in retrying] == ["transient", "transient"]
    assert "simulated transient failure 1 of 2" in retrying[0].attrs["error"]["message"]
    assert status.transitions[-1].attrs["attempt"] == 3
    await assert_mirrored(karma, [status])


async def test_unexpected_exceptions_are_transient(karma: EmbeddedKarma) -> None:
    status = await finished(await karma.client.request("test.crash"))
    assert status.state is ActionState.FAILED
    assert event_types(status) == [R, A, S, EventType.RETRYING, EventType.FAILED]
    error = status.transitions[-1].attrs["error"]
    assert error["type"] == "transient"
    assert error["code"] == "RuntimeError"
    assert error["message"] == "RuntimeError: boom"
    await assert_mirrored(karma, [status])


async def test_permanent_failure_is_never_retried(karma: EmbeddedKarma) -> None:
    handle = await karma.client.request("test.permanent")
    outcome = await asyncio.wait_for(handle.result(), 60)
    assert outcome.state is ActionState.FAILED
    assert outcome.attempts == 1
    assert outcome.error is not None and outcome.error.type is ErrorType.PERMANENT
    # Outputs keep their declared keys on failure too.
    assert outcome.outputs == {"never": None}
    status = await handle.status()
    assert event_types(status) == [R, A, S, EventType.FAILED]
    description = await karma.temporal.get_workflow_handle(handle.workflow_id).describe()
    assert description.status is WorkflowExecutionStatus.FAILED
    await assert_mirrored(karma, [status])


async def test_validation_failure_is_recorded_and_never_retried(karma: EmbeddedKarma) -> None:
    handle = await karma.client.request("delay", {"seconds": "soon", "speed": 3}, validate=False)
    outcome = await asyncio.wait_for(handle.result(), 60)
    assert outcome.state is ActionState.FAILED
    assert outcome.attempts == 0
    assert outcome.error is not None and outcome.error.type is ErrorType.VALIDATION
    assert {f.field: f.reason for f in outcome.error.fields} == {
        "params.seconds": "must be a number",
        "params.speed": "unknown parameter",
    }
    status = await handle.status()
    assert event_types(status) == [R, EventType.FAILED]
    await assert_mirrored(karma, [status])


async def test_unknown_action_type_fails_validation(karma: EmbeddedKarma) -> None:
    handle = await karma.client.request("no.such.action", {"password": "x"}, validate=False)
    outcome = await asyncio.wait_for(handle.result(), 60)
    assert outcome.error is not None and outcome.error.type is ErrorType.VALIDATION
    status = await handle.status()
    # Without metadata nothing is known to be safe: every argument is redacted.
    assert status.transitions[0].attrs["args"] == {"password": "***"}
    await assert_mirrored(karma, [status])


async def test_cancelling_a_running_delay(karma: EmbeddedKarma) -> None:
    handle = await karma.client.request("delay", {"seconds": 120})
    async for event in handle.transitions(poll_interval=0.1):
        if event.event_type is EventType.STARTED:
            break
    await handle.cancel()
    outcome = await asyncio.wait_for(handle.result(), 60)
    assert outcome.state is ActionState.CANCELLED
    status = await handle.status()
    assert event_types(status) == [R, A, S, EventType.CANCELLED]
    description = await karma.temporal.get_workflow_handle(handle.workflow_id).describe()
    assert description.status is WorkflowExecutionStatus.CANCELED
    await assert_mirrored(karma, [status])


async def test_same_idempotency_key_is_one_action(karma: EmbeddedKarma) -> None:
    key = unique("restart:job:abc")
    first, second = await asyncio.gather(
        karma.client.request("delay", {"seconds": 0.5}, idempotency_key=key),
        karma.client.request("delay", {"seconds": 0.5}, idempotency_key=key),
    )
    assert first.action_id == second.action_id
    assert sorted([first.created, second.created]) == [False, True]
    await asyncio.wait_for(first.result(), 60)
    third = await karma.client.request("delay", {"seconds": 0.5}, idempotency_key=key)
    assert third.created is False and third.action_id == first.action_id
    runs = [w async for w in karma.temporal.list_workflows(f"WorkflowId = '{first.workflow_id}'")]
    assert len(runs) == 1
    status = await first.status()
    assert event_types(status).count(R) == 1
    await assert_mirrored(karma, [status])


async def test_search_attributes_make_actions_filterable(karma: EmbeddedKarma) -> None:
    entity = unique("job")
    handle = await karma.client.request("log", {"message": "x"}, entity_id=entity, tenant="acme")
    await asyncio.wait_for(handle.result(), 60)
    query = (
        f"KarmaEntityId = '{entity}' AND KarmaActionType = 'log' AND KarmaTenant = 'acme' "
        "AND KarmaState = 'SUCCEEDED'"
    )
    for _ in range(100):  # visibility is eventually consistent
        found = [w.id async for w in karma.temporal.list_workflows(query)]
        if found:
            break
        await asyncio.sleep(0.1)
    assert found == [handle.workflow_id]


async def test_secrets_never_reach_kafka_clickhouse_or_logs(
    karma: EmbeddedKarma, caplog: pytest.LogCaptureFixture
) -> None:
    token = unique("tok-SECRET")
    caplog.set_level(logging.DEBUG)
    handle = await karma.client.request("test.secret", {"user": "ops", "token": token})
    outcome = await asyncio.wait_for(handle.result(), 60)
    assert outcome.outputs == {"token_length": len(token)}  # the executor did get it
    status = await handle.status()
    assert token not in status.model_dump_json()
    assert status.transitions[0].attrs["args"] == {"user": "ops", "token": "***"}
    await assert_mirrored(karma, [status])
    topics = karma.settings.kafka.topics.all()
    assert not [
        m
        for m in await read_topics(karma.settings.kafka, topics)
        if token.encode() in (m.value or b"")
    ]
    rows = await asyncio.to_thread(karma.ledger.transitions, [handle.action_id])
    assert rows and all(token not in str(r) for r in rows)
    assert token not in caplog.text
    # Sealed by the client: Temporal history (and so the Web UI) never holds it in clear.
    history = await karma.temporal.get_workflow_handle(handle.workflow_id).fetch_history()
    raw = b"".join(event.SerializeToString() for event in history.events)
    assert b"$karma_sealed" in raw
    assert token.encode() not in raw


async def test_status_query_reports_progress_of_a_running_action(karma: EmbeddedKarma) -> None:
    handle = await karma.client.request("delay", {"seconds": 1})
    async for event in handle.transitions(poll_interval=0.05):
        if event.event_type is EventType.STARTED:
            break
    running = await handle.status()
    assert running.state is ActionState.STARTED
    assert running.attempt == 1
    status = await finished(handle)
    assert status.outputs["slept_seconds"] >= 1
    await assert_in_ledger_once(karma, [status])
