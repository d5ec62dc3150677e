"""`demo.tail`: a streaming action that tails a file, one item per line
(`{"line": n, "text": ...}`), following it until `lines` lines were streamed; after a
crash it goes on from the line Kafka last acknowledged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

from karma.errors import PermanentError
from karma.executor import ActionContext
from karma.meta import ActionMeta, ExecutionMode, OutputDefinition, ParamDefinition, ParamType
from karma.registry import register_action
from karma.streaming import StreamingActionExecutor

READ_LINES = 1000

META = ActionMeta(
    type="demo.tail",
    name="Tail a file",
    description="Streams a file's lines to the stream topic, following it until `lines` "
    "lines were streamed.",
    category="demo",
    icon="file-text",
    mode=ExecutionMode.STREAMING,
    timeout=timedelta(minutes=10),
    heartbeat_timeout=timedelta(seconds=5),  # a lost worker is noticed within seconds
    params=(
        ParamDefinition(name="path", type=ParamType.STRING, required=True),
        ParamDefinition(name="lines", type=ParamType.NUMBER, required=True, min=1, max=10**9),
        ParamDefinition(
            name="per_second",
            type=ParamType.NUMBER,
            default=0,
            min=0,
            max=1_000_000,
            description="at most this many lines a second (0: as fast as Kafka takes them)",
        ),
        ParamDefinition(name="poll_seconds", type=ParamType.NUMBER, default=0.2, min=0.01, max=60),
    ),
    outputs=(OutputDefinition(name="items", type=ParamType.NUMBER),),
)


@register_action(META)
class TailExecutor(StreamingActionExecutor):
    batch_items = 50
    batch_seconds = 0.5
    chunk_items = 1000
    chunk_seconds = 5.0

    async def stream(self, ctx: ActionContext, position: int) -> AsyncIterator[Any]:
        path = Path(str(ctx.params["path"]))
        wanted = int(ctx.params["lines"])
        pause = 1 / float(ctx.params["per_second"]) if ctx.params["per_second"] else 0.0
        line = 0
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except OSError as exc:
            raise PermanentError(f"cannot read {path}: {exc.strerror or exc}") from exc
        try:
            while line < wanted:
                # Whole lines, many per thread call (the lines before `position` too).
                lines = await asyncio.to_thread(_complete_lines, handle, READ_LINES)
                if not lines:  # the end for now: follow it
                    await asyncio.sleep(float(ctx.params["poll_seconds"]))
                    continue
                for raw in lines:
                    if line >= wanted:
                        break
                    if line >= position:
                        text = raw.decode("utf-8", errors="replace").rstrip("\n")
                        yield {"line": line, "text": text}
                        if pause:
                            await asyncio.sleep(pause)
                    line += 1
        finally:
            handle.close()


def _complete_lines(handle: BinaryIO, most: int) -> list[bytes]:
    """Up to `most` whole lines; a line still being written is left for later."""
    out: list[bytes] = []
    while len(out) < most:
        start = handle.tell()
        raw = handle.readline()
        if not raw.endswith(b"\n"):
            handle.seek(start)
            break
        out.append(raw)
    return out
