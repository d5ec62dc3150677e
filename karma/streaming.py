"""Streaming actions: an executor yields items (`async def stream(ctx, position)`), and
Karma publishes them to the stream topic in batches, each acknowledged by Kafka before
more are asked for, and counts them in an `action.progress` transition per chunk.

It runs as a stateful action whose state is where the stream stands: the position (items
published), the partition and the offset after the last acknowledged item. The first
iteration only notes the partition's end; each later one asks `stream` for items from
the position on. After a crash (the worker killed mid-chunk) the next attempt reads the
partition forward from the recorded offset, finds what Kafka acknowledged since, and
resumes after it: the executor gets that position, and no item is published twice on the
normal path. A consumer sees each action's items in order on one partition (key = action
id, seq in the value and the `karma-stream-seq` header).
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import AsyncIterator
from typing import Any, ClassVar, Protocol

from karma.errors import PermanentError
from karma.executor import ActionContext
from karma.meta import ExecutionMode
from karma.stateful import Break, Continue, StatefulActionExecutor


class ItemSink(Protocol):
    async def partition_of(self, action_id: str) -> int: ...

    async def end_offset(self, partition: int) -> int: ...

    async def publish(
        self, action_id: str, partition: int, first_seq: int, items: list[Any]
    ) -> int: ...

    async def last_seq(self, action_id: str, partition: int, from_offset: int) -> int | None: ...


class StreamingActionExecutor(StatefulActionExecutor, kind=ExecutionMode.STREAMING):
    """Implement `stream`; tune the batches (`batch_items`, `batch_seconds`) and how much
    one chunk (an attempt, one progress transition) streams (`chunk_items`,
    `chunk_seconds`)."""

    batch_items: ClassVar[int] = 100
    batch_seconds: ClassVar[float] = 1.0
    chunk_items: ClassVar[int] = 5000
    chunk_seconds: ClassVar[float] = 10.0
    iterations_per_run: ClassVar[int] = 200

    @abstractmethod
    def stream(self, ctx: ActionContext, position: int) -> AsyncIterator[Any]:
        """Items from `position` (0: the first) on, as JSON-serialisable values; ending
        the iteration ends the action."""

    async def execute_with_state(
        self, ctx: ActionContext, state: dict[str, Any]
    ) -> Continue | Break:
        sink: ItemSink | None = ctx.resources.get(STREAM_SINK)
        if sink is None:
            raise PermanentError("this worker publishes no stream (no stream sink)")
        if "partition" not in state:  # first: where the stream starts, before any item
            partition = await sink.partition_of(ctx.action_id)
            start = {"position": 0, "partition": partition,
                     "offset": await sink.end_offset(partition)}  # fmt: skip
            return Continue(state=start, progress=0.0, message="stream started")
        partition, offset = int(state["partition"]), int(state["offset"])
        position = int(state["position"])
        acknowledged = await sink.last_seq(ctx.action_id, partition, offset)
        if acknowledged is not None and acknowledged + 1 > position:
            ctx.logger.info("resuming after item %s (published before a crash)", acknowledged)
            position = acknowledged + 1
        started = time.monotonic()
        batch: list[Any] = []
        batch_started = time.monotonic()
        streamed = 0
        stream = self.stream(ctx, position)
        try:
            async for item in stream:
                batch.append(item)
                streamed += 1
                if len(batch) >= self.batch_items or (
                    time.monotonic() - batch_started >= self.batch_seconds
                ):
                    offset = await sink.publish(ctx.action_id, partition, position, batch)
                    position += len(batch)
                    batch, batch_started = [], time.monotonic()
                if streamed >= self.chunk_items or time.monotonic() - started >= self.chunk_seconds:
                    break
            else:
                if batch:
                    offset = await sink.publish(ctx.action_id, partition, position, batch)
                    position += len(batch)
                return Break(outputs={"items": position})
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        if batch:
            offset = await sink.publish(ctx.action_id, partition, position, batch)
            position += len(batch)
        state = {"position": position, "partition": partition, "offset": offset}
        return Continue(state=state, message=f"{position} items", outputs={"items": position})


STREAM_SINK = "karma.stream"  # the resource name the worker gives the sink under
