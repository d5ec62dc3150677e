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

import asyncio
import contextlib
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

    async def acknowledged(self, action_id: str, partition: int, from_offset: int) -> set[int]: ...


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
        if ctx.attempt > 1:  # an earlier attempt of this chunk may have published items
            seqs = await sink.acknowledged(ctx.action_id, partition, offset)
            resumed = position
            while resumed in seqs:  # after the unbroken run Kafka acknowledged
                resumed += 1
            if resumed > position:
                ctx.logger.info("resuming after item %s (published before a crash)", resumed - 1)
                position = resumed
        items: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=self.batch_items)
        pulling = asyncio.ensure_future(_pull(self.stream(ctx, position), items))
        loop = asyncio.get_running_loop()
        chunk_ends = loop.time() + self.chunk_seconds
        streamed, ended = 0, False
        try:
            while not ended and streamed < self.chunk_items and loop.time() < chunk_ends:
                batch: list[Any] = []
                # A batch ends full, after batch_seconds, at the chunk's end, or with the
                # stream; an idle stream still flushes what it holds.
                batch_ends = min(loop.time() + self.batch_seconds, chunk_ends)
                while len(batch) < self.batch_items and streamed + len(batch) < self.chunk_items:
                    try:
                        got = await asyncio.wait_for(items.get(), batch_ends - loop.time())
                    except TimeoutError:
                        break
                    kind, value = got
                    if kind == "error":
                        raise value
                    if kind == "end":
                        ended = True
                        break
                    batch.append(value)
                if batch:
                    offset = await sink.publish(ctx.action_id, partition, position, batch)
                    position += len(batch)
                    streamed += len(batch)
        finally:
            pulling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pulling
        if ended:
            return Break(outputs={"items": position})
        state = {"position": position, "partition": partition, "offset": offset}
        return Continue(state=state, message=f"{position} items", outputs={"items": position})


async def _pull(stream: AsyncIterator[Any], items: asyncio.Queue[tuple[str, Any]]) -> None:
    """Feed the stream's items to the queue (bounded: the stream waits for the batches to
    be published), then ("end", None); a failure of the stream, ("error", exc), ends the
    attempt with it."""
    try:
        async for item in stream:
            await items.put(("item", item))
        await items.put(("end", None))
    except Exception as exc:  # noqa: BLE001 - handed to the attempt, which raises it
        await items.put(("error", exc))
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()


STREAM_SINK = "karma.stream"  # the resource name the worker gives the sink under
