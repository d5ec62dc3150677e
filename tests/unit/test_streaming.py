"""The streaming executor's chunks against a sink the test holds: where a stream starts,
batches in order, the chunk bound, and the resume after items a crashed attempt had
Kafka acknowledge."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from karma.errors import PermanentError
from karma.executor import ActionContext
from karma.stateful import Break, Continue
from karma.streaming import STREAM_SINK, StreamingActionExecutor


class Sink:
    def __init__(self) -> None:
        self.records: list[tuple[str, int, Any]] = []  # (action, seq, item) at offsets 10..
        self.batches: list[int] = []

    async def partition_of(self, action_id: str) -> int:
        return 2

    async def end_offset(self, partition: int) -> int:
        return 10 + len(self.records)

    async def publish(
        self, action_id: str, partition: int, first_seq: int, items: list[Any]
    ) -> int:
        self.batches.append(len(items))
        for index, item in enumerate(items):
            self.records.append((action_id, first_seq + index, item))
        return 10 + len(self.records)

    async def acknowledged(self, action_id: str, partition: int, from_offset: int) -> set[int]:
        return {seq for a, seq, _ in self.records[from_offset - 10 :] if a == action_id}


class Numbers(StreamingActionExecutor):
    batch_items = 3
    batch_seconds = 60.0
    chunk_items = 7
    total = 10

    async def stream(self, ctx: ActionContext, position: int) -> AsyncIterator[Any]:
        for n in range(position, self.total):
            yield {"n": n}


def context(sink: Sink, attempt: int = 1) -> ActionContext:
    return ActionContext(
        action_id="act_1", action_type="t", params={}, attempt=attempt,
        resources={STREAM_SINK: sink},
    )  # fmt: skip


async def test_chunks_publish_batches_in_order_and_end_with_the_count() -> None:
    sink = Sink()
    executor = Numbers()
    first = await executor.execute_with_state(context(sink), {})
    assert isinstance(first, Continue) and first.state == {
        "position": 0,
        "partition": 2,
        "offset": 10,
    }
    second = await executor.execute_with_state(context(sink), first.state)
    assert isinstance(second, Continue) and second.state["position"] == 7
    assert sink.batches == [3, 3, 1]  # the chunk's bound flushes what it holds
    third = await executor.execute_with_state(context(sink), second.state)
    assert isinstance(third, Break) and third.outputs == {"items": 10}
    assert [seq for _, seq, _ in sink.records] == list(range(10))


async def test_a_retried_chunk_resumes_after_what_kafka_acknowledged() -> None:
    sink = Sink()
    executor = Numbers()
    start = await executor.execute_with_state(context(sink), {})
    assert isinstance(start, Continue)
    # A crashed attempt published 4 items (its state was never recorded)...
    await sink.publish("act_1", 2, 0, [{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3}])
    await sink.publish("act_other", 2, 0, [{"n": 99}])
    # ...the retry starts from the recorded state, and goes on after them.
    retried = await executor.execute_with_state(context(sink, attempt=2), start.state)
    assert isinstance(retried, Break) and retried.outputs == {"items": 10}
    mine = [seq for action, seq, _ in sink.records if action == "act_1"]
    assert mine == list(range(10))  # no seq twice


class Idle(StreamingActionExecutor):
    batch_items = 100
    batch_seconds = 0.05
    chunk_seconds = 0.3

    async def stream(self, ctx: ActionContext, position: int) -> AsyncIterator[Any]:
        yield {"n": position}
        yield {"n": position + 1}
        await asyncio.sleep(60)  # a followed file that stays quiet
        yield {"never": True}


async def test_an_idle_stream_still_publishes_what_it_gave_and_ends_its_chunk() -> None:
    sink = Sink()
    executor = Idle()
    start = await executor.execute_with_state(context(sink), {})
    assert isinstance(start, Continue)
    began = time.monotonic()
    chunk = await executor.execute_with_state(context(sink), start.state)
    assert time.monotonic() - began < 5
    assert isinstance(chunk, Continue) and chunk.state["position"] == 2
    assert [seq for _, seq, _ in sink.records] == [0, 1]


class Broken(StreamingActionExecutor):
    async def stream(self, ctx: ActionContext, position: int) -> AsyncIterator[Any]:
        yield {"n": 0}
        raise PermanentError("the source is gone")


async def test_a_failing_stream_fails_the_attempt_with_its_error() -> None:
    sink = Sink()
    start = await Broken().execute_with_state(context(sink), {})
    assert isinstance(start, Continue)
    with pytest.raises(PermanentError, match="the source is gone"):
        await Broken().execute_with_state(context(sink), start.state)
    with pytest.raises(PermanentError, match="no stream sink"):
        await Broken().execute_with_state(
            ActionContext(action_id="a", action_type="t", params={}, attempt=1), start.state
        )


def test_the_recovery_scan_passes_over_records_that_are_not_karmas_items() -> None:
    from bridge.stream_sink import item_seq

    assert item_seq(b'{"action_id": "a", "seq": 41, "item": 1}') == 41
    hostile = [
        None, b"", b"\xff\xfe not utf-8", b"[" * 100_000, b"{}", b'{"seq": "7"}',
        b'{"seq": true}', b'{"seq": -1}', b"[1, 2]", b"x" * 1_000_000,
    ]  # fmt: skip
    assert [item_seq(v) for v in hostile] == [None] * len(hostile)
