"""Transitions wait in the workflow's outbox while Kafka is unreachable, and the action
does not finish before Kafka has acknowledged all of them."""

from __future__ import annotations

import asyncio
import os
import signal

from karma.lifecycle import ActionState
from tests.support.checks import assert_mirrored
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
