"""Work too large for Temporal's history fails loudly: refused at the door with the sizes,
or the action ends FAILED with `payload_too_large`; never a workflow stuck in REQUESTED."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from temporalio.client import WorkflowHandle

from karma import names
from karma.errors import ActionNotFoundError, ErrorType, ValidationError
from karma.ids import action_id_for_key, workflow_id_for
from karma.lifecycle import ActionState
from karma.request import ActionRequest
from tests.conftest import unique
from tests.support.checks import assert_mirrored
from tests.support.kafka import dead_letters_at, produce_each
from tests.support.messages import envelope, request
from tests.support.processes import karma_env, run_karma
from tests.support.waiting import reached
from workers.embedded import EmbeddedKarma

BIG = 400_000  # over the default limit of 262,144 bytes


async def test_a_large_request_is_refused_by_the_sdk_naming_the_parameter(
    karma: EmbeddedKarma,
) -> None:
    key = unique("big")
    with pytest.raises(ValidationError) as caught:
        await karma.client.request("log", {"message": "m" * BIG}, idempotency_key=key)
    error = caught.value.errors[0]
    assert error.field == "params.message"
    assert error.reason.startswith("400,002 bytes; the request is ")
    with pytest.raises(ActionNotFoundError):  # nothing was started
        await karma.client.handle(action_id_for_key(key)).status()


async def test_the_cli_refuses_it_with_exit_2_and_the_limit_is_configurable(
    karma: EmbeddedKarma,
) -> None:
    env = karma_env(karma.settings, KARMA_LIMITS__MAX_PAYLOAD_BYTES="2048")
    key = unique("cli-big")
    code, out = await run_karma(["request", "log", "-p", f"message={'m' * 5000}", "-k", key], env)
    assert code == 2, out
    assert "params.message: 5,002 bytes; the request is" in out
    assert "over the limit of 2,048 (KARMA_LIMITS__MAX_PAYLOAD_BYTES)" in out
    assert "Traceback" not in out
    with pytest.raises(ActionNotFoundError):
        await karma.client.handle(action_id_for_key(key)).status()


async def test_the_ingress_dead_letters_a_large_request_and_a_large_callback(
    karma: EmbeddedKarma,
) -> None:
    kafka = karma.settings.kafka
    key = unique("ingress-big")
    positions = await produce_each(
        kafka,
        [
            (kafka.topics.requested, request("log", {"message": "m" * BIG}, idempotency_key=key)),
            (
                kafka.topics.callbacks,
                envelope("done", action_id=unique("act"), attrs={"log": "l" * BIG}),
            ),
        ],
    )
    letters = await dead_letters_at(kafka, positions)
    assert [len(found) for found in letters.values()] == [1, 1]
    assert "params.message: 400,002 bytes" in letters[positions[0]][0].reason
    assert "(event): the event is" in letters[positions[1]][0].reason
    assert "largest: attrs.log (400,002 bytes)" in letters[positions[1]][0].reason
    with pytest.raises(ActionNotFoundError):
        await karma.client.handle(action_id_for_key(key)).status()


async def test_outputs_too_large_end_the_action_failed(karma: EmbeddedKarma) -> None:
    handle = await karma.client.request("test.big", {"output_bytes": BIG})
    outcome = await asyncio.wait_for(handle.result(), 60)
    assert outcome.state is ActionState.FAILED
    assert outcome.error is not None
    assert outcome.error.type is ErrorType.PAYLOAD_TOO_LARGE
    assert "largest outputs: blob (400,002 bytes)" in outcome.error.message
    await assert_mirrored(karma, [await handle.status()])


async def test_an_answer_to_an_event_too_large_ends_the_action_failed(
    karma: EmbeddedKarma,
) -> None:
    external = unique("ext")
    handle = await karma.client.request("test.await", {"external_id": external})
    await reached(handle, ActionState.WAITING)
    with pytest.raises(ValidationError, match=r"\(event\): the event is"):
        await handle.callback({"event_type": "done", "attrs": {"answer": "a" * BIG}})
    await handle.callback({"event_type": "huge", "attrs": {"bytes": BIG}})
    outcome = await asyncio.wait_for(handle.result(), 60)
    assert outcome.state is ActionState.FAILED
    assert outcome.error is not None
    assert outcome.error.type is ErrorType.PAYLOAD_TOO_LARGE
    await assert_mirrored(karma, [await handle.status()])


async def test_status_of_a_workflow_too_large_to_run_explains_why(karma: EmbeddedKarma) -> None:
    """Started around the SDK's checks (straight through Temporal), the workflow cannot
    run: `karma status` says why in one line instead of a raw timeout."""
    oversized = ActionRequest.new("log", {"message": "m" * 1_500_000})
    handle = await karma.temporal.start_workflow(
        names.ACTION_WORKFLOW,
        oversized,
        id=workflow_id_for(oversized.action_id),
        task_queue=karma.settings.temporal.task_queue,
    )
    try:
        async with asyncio.timeout(60):  # until its first workflow task has failed
            while not await task_failed(handle):  # noqa: ASYNC110 - polling the history
                await asyncio.sleep(0.5)
        code, out = await run_karma(["status", oversized.action_id], karma_env(karma.settings))
        assert code == 3, out
        assert "cannot run: its workflow task keeps failing" in out
        assert "exceeded the error limit" in out
        assert out.count("\n") == 1, out
    finally:
        await handle.terminate()


async def task_failed(handle: WorkflowHandle[Any, Any]) -> bool:
    async for event in handle.fetch_history_events():
        if event.HasField("workflow_task_failed_event_attributes"):
            return True
    return False
