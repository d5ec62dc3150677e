"""An idempotency key the ledger knows answers with the existing action even after
Temporal forgot its workflow (simulated: ledger rows for an action Temporal never had)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from temporalio.service import RPCError, RPCStatusCode

from bridge.ledger_schema import KafkaPosition, ledger_row
from karma.envelope import Transition
from karma.ids import action_id_for_key
from karma.kafka_config import client_kwargs
from karma.lifecycle import ActionState, EventType
from tests.conftest import unique
from tests.support.kafka import produce_each, transitions_on_kafka
from tests.support.messages import request
from tests.support.processes import karma_env, run_karma
from workers.embedded import EmbeddedKarma


async def ran_long_ago(karma: EmbeddedKarma, key: str) -> str:
    """Ledger rows of a `log` action that succeeded a month ago; Temporal has no trace."""
    action_id = action_id_for_key(key)
    start = datetime.now(UTC) - timedelta(days=30)
    steps = [
        (EventType.REQUESTED, {"command": "log", "args": {"message": "then"}}),
        (EventType.ACCEPTED, {"command": "log", "args": {"message": "then"}}),
        (EventType.STARTED, {"attempt": 1}),
        (EventType.SUCCEEDED, {"attempt": 1, "outputs": {"logged": "then"}, "duration_ms": 5}),
    ]
    rows = [
        ledger_row(
            Transition(
                ts=start + timedelta(milliseconds=seq),
                event_type=event_type,
                action_id=action_id,
                seq=seq,
                idempotency_key=key,
                tags={"action": "log"},
                attrs=attrs,
            ),
            KafkaPosition("actions.result", 0, seq),
        )
        for seq, (event_type, attrs) in enumerate(steps, start=1)
    ]
    assert await asyncio.to_thread(karma.ledger.write, rows) == 4
    return action_id


async def assert_nothing_new(karma: EmbeddedKarma, action_id: str) -> None:
    assert await asyncio.to_thread(karma.ledger.count_events, [action_id]) == 4
    assert (await transitions_on_kafka(karma.settings.kafka, [action_id]))[action_id] == []


async def test_the_sdk_answers_from_the_ledger(karma: EmbeddedKarma) -> None:
    key = unique("long-ago")
    action_id = await ran_long_ago(karma, key)
    handle = await karma.client.request("log", {"message": "now"}, idempotency_key=key)
    assert (handle.action_id, handle.created) == (action_id, False)
    status = await handle.status()
    assert (status.state, status.from_ledger) == (ActionState.SUCCEEDED, True)
    assert [e.seq for e in status.transitions] == [1, 2, 3, 4]
    outcome = await handle.result()
    assert (outcome.state, outcome.outputs) == (ActionState.SUCCEEDED, {"logged": "then"})
    with pytest.raises(RPCError) as caught:  # no workflow was started
        await karma.temporal.get_workflow_handle(handle.workflow_id).describe()
    assert caught.value.status is RPCStatusCode.NOT_FOUND
    await assert_nothing_new(karma, action_id)


async def test_the_cli_is_answered_by_the_worker_from_the_ledger(karma: EmbeddedKarma) -> None:
    """The CLI cannot open the embedded ledger (this process owns it): the worker answers."""
    key = unique("long-ago-cli")
    action_id = await ran_long_ago(karma, key)
    env = karma_env(karma.settings)
    code, out = await run_karma(["request", "log", "-p", "message=now", "-k", key, "--wait"], env)
    assert code == 0, out
    assert f"action {action_id}" in out
    assert "SUCCEEDED" in out
    code, out = await run_karma(["status", action_id], env)
    assert code == 0, out
    assert 'outputs  {"logged":"then"}' in out, out
    assert "answered from the ledger" in out
    await assert_nothing_new(karma, action_id)


async def test_the_ingress_starts_nothing_for_a_key_the_ledger_knows(
    karma: EmbeddedKarma,
) -> None:
    key = unique("long-ago-kafka")
    action_id = await ran_long_ago(karma, key)
    kafka = karma.settings.kafka
    [(topic, partition, offset)] = await produce_each(
        kafka, [(kafka.topics.requested, request("log", {"message": "now"}, idempotency_key=key))]
    )
    consumer = AIOKafkaConsumer(
        group_id=karma.settings.ingress.requests_group,
        enable_auto_commit=False,
        **client_kwargs(kafka),
    )
    await consumer.start()
    try:
        async with asyncio.timeout(30):  # until the ingress has handled the request
            while (await consumer.committed(TopicPartition(topic, partition)) or 0) <= offset:  # noqa: ASYNC110 - polling the broker
                await asyncio.sleep(0.2)
    finally:
        await consumer.stop()
    with pytest.raises(RPCError) as caught:
        await karma.temporal.get_workflow_handle(f"action-{action_id}").describe()
    assert caught.value.status is RPCStatusCode.NOT_FOUND
    await assert_nothing_new(karma, action_id)
