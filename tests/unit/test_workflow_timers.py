"""Timers and timeouts of ActionWorkflow on Temporal's time-skipping test server.

Transitions still go to a real (tansu) broker: only Temporal's clock is skipped.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from karma.client import KarmaClient
from karma.embedded.binaries import tansu_binary, temporal_test_server_binary
from karma.embedded.kafka_broker import TansuBroker
from karma.embedded.process import free_port
from karma.errors import ErrorType
from karma.executor import ActionContext, ActionResult, BaseActionExecutor
from karma.lifecycle import ActionState, EventType
from karma.meta import ActionMeta, RetryPolicy
from karma.registry import default_registry
from karma.settings import KafkaSettings, Settings
from tests.support.actions import AwaitExecutor
from workers.worker import ActionWorker


class SlowExecutor(BaseActionExecutor):
    meta = ActionMeta(
        type="test.slow",
        name="Slower than its timeout",
        timeout=timedelta(seconds=1),
        retry=RetryPolicy(
            max_attempts=2,
            initial_interval=timedelta(minutes=10),
            maximum_interval=timedelta(hours=1),
        ),
    )

    async def execute(self, ctx: ActionContext) -> ActionResult:
        await asyncio.sleep(30)
        return ActionResult()


@pytest.fixture(scope="module")
async def broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TansuBroker]:
    try:
        tansu_binary()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    log = Path(tmp_path_factory.mktemp("tansu")) / "tansu.log"
    broker = TansuBroker(host="127.0.0.1", port=free_port(), log_path=log)
    await broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    try:
        server = temporal_test_server_binary()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    async with await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=str(server)
    ) as environment:
        yield environment


@pytest.fixture(scope="module")
async def client(env: WorkflowEnvironment, broker: TansuBroker) -> AsyncIterator[KarmaClient]:
    settings = Settings(kafka=KafkaSettings(bootstrap_servers=broker.bootstrap_servers))
    registry = default_registry().extended([SlowExecutor, AwaitExecutor])  # + demo.approval
    queue = f"timers-{uuid.uuid4().hex[:8]}"
    async with ActionWorker(env.client, settings, registry=registry, task_queue=queue):
        # The time-skipping server has no custom search attributes.
        yield KarmaClient(env.client, task_queue=queue, registry=registry, search_attributes=False)


async def test_retry_after_is_honoured_even_when_long(client: KarmaClient) -> None:
    handle = await client.request("demo.flaky", {"failures": 2, "retry_after": 900})
    outcome = await handle.result()
    assert outcome.state is ActionState.SUCCEEDED
    assert outcome.attempts == 3
    events = (await handle.status()).transitions
    retrying = [e for e in events if e.event_type is EventType.RETRYING]
    assert [e.attrs["retry_in_ms"] for e in retrying] == [900_000, 900_000]
    succeeded = events[-1]
    assert succeeded.ts - retrying[0].ts >= timedelta(seconds=1800)


async def test_backoff_follows_the_retry_policy(client: KarmaClient) -> None:
    handle = await client.request("demo.flaky", {"failures": 3})
    outcome = await handle.result()
    assert outcome.attempts == 4
    retrying = [
        e for e in (await handle.status()).transitions if e.event_type is EventType.RETRYING
    ]
    # demo.flaky: 200 ms doubling, capped at 2 s
    assert [e.attrs["retry_in_ms"] for e in retrying] == [200, 400, 800]
    assert [e.attrs["attempt"] for e in retrying] == [1, 2, 3]


async def test_an_attempt_past_its_timeout_is_retried_then_fails(client: KarmaClient) -> None:
    handle = await client.request("test.slow")
    outcome = await handle.result()
    assert outcome.state is ActionState.FAILED
    assert outcome.error is not None
    assert outcome.error.type is ErrorType.TIMEOUT
    events = (await handle.status()).transitions
    assert [e.event_type for e in events] == [
        EventType.REQUESTED,
        EventType.ACCEPTED,
        EventType.STARTED,
        EventType.RETRYING,
        EventType.FAILED,
    ]
    assert events[3].attrs["error"]["type"] == "timeout"
    assert events[3].attrs["retry_in_ms"] == 600_000


async def test_an_event_driven_action_times_out_after_days(client: KarmaClient) -> None:
    week = 7 * 86_400
    handle = await client.request("test.await", {"external_id": "ext-1", "wait_seconds": week})
    outcome = await handle.result()
    assert outcome.state is ActionState.TIMED_OUT
    assert outcome.error is not None
    assert outcome.error.type is ErrorType.TIMEOUT
    assert outcome.outputs == {"external": "ext-1", "answer": None, "last_seen": None}
    events = (await handle.status()).transitions
    assert [e.event_type for e in events][-2:] == [EventType.WAITING, EventType.TIMED_OUT]
    assert events[-2].attrs["timeout_ms"] == week * 1000
    assert events[-1].ts - events[-2].ts >= timedelta(seconds=week)


async def test_an_event_within_a_long_wait_completes_the_action(
    client: KarmaClient, env: WorkflowEnvironment
) -> None:
    handle = await client.request("test.await", {"external_id": "ext-2", "wait_seconds": 86_400})
    async with asyncio.timeout(30):
        while True:
            if (await handle.status()).state is ActionState.WAITING:
                break
            await asyncio.sleep(0.05)
    await env.sleep(3600)  # an hour passes: still waiting
    assert (await handle.status()).state is ActionState.WAITING
    await handle.callback({"event_type": "done", "attrs": {"answer": "late"}})
    outcome = await handle.result()
    assert outcome.state is ActionState.SUCCEEDED
    assert outcome.outputs["answer"] == "late"


@pytest.mark.parametrize(
    ("policy", "state", "events"),
    [
        ("reject", ActionState.FAILED, [EventType.WAITING, EventType.DECIDED, EventType.FAILED]),
        (
            "approve",
            ActionState.SUCCEEDED,
            [EventType.WAITING, EventType.DECIDED, EventType.STARTED, EventType.SUCCEEDED],
        ),
        (
            "escalate",
            ActionState.TIMED_OUT,
            [EventType.WAITING, EventType.ESCALATED, EventType.TIMED_OUT],
        ),
    ],
)
async def test_a_decision_timeout_follows_the_policy(
    client: KarmaClient, policy: str, state: ActionState, events: list[EventType]
) -> None:
    day = 86_400
    handle = await client.request(
        "demo.approval", {"change": "c", "timeout_seconds": day, "on_timeout": policy}
    )
    outcome = await handle.result()
    assert outcome.state is state
    transitions = (await handle.status()).transitions
    assert [e.event_type for e in transitions][2:] == events
    if policy != "escalate":
        assert outcome.decision is not None
        assert outcome.decision.automatic
        assert outcome.decision.by == "timeout policy"
        assert transitions[3].ts - transitions[2].ts >= timedelta(seconds=day)
    else:
        assert outcome.error is not None and outcome.error.type is ErrorType.TIMEOUT
        assert transitions[-1].ts - transitions[2].ts >= timedelta(seconds=2 * day)


async def test_an_escalated_decision_still_counts(
    client: KarmaClient, env: WorkflowEnvironment
) -> None:
    handle = await client.request(
        "demo.approval", {"change": "c", "timeout_seconds": 3600, "on_timeout": "escalate"}
    )
    async with asyncio.timeout(30):
        while True:
            status = await handle.status()
            if EventType.ESCALATED in [e.event_type for e in status.transitions]:
                break
            await env.sleep(600)
    await handle.approve(by="oncall", reason="escalated to me")
    outcome = await handle.result()
    assert outcome.state is ActionState.SUCCEEDED
    assert outcome.outputs["approved_by"] == "oncall"
