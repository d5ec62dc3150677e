"""The lifecycle every long-lived part of Karma shares (producers, consumers, the bridge,
the worker, the embedded stack): `start()` once, `stop()` as often as you like, or
`async with`. As aiokafka does it: a second `start` is refused; a failed `start` stops
what it had started; `stop` before `start` or after `stop` does nothing."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self


class Component:
    """Subclasses implement `_start` and `_stop`."""

    _lifecycle: str = "new"  # then "started", then "stopped"
    _stopped: asyncio.Future[None] | None = None

    async def start(self) -> None:
        if self._lifecycle != "new":
            raise RuntimeError(f"{type(self).__name__} cannot start twice ({self._lifecycle})")
        self._lifecycle = "started"
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop; a second call waits for the first to finish."""
        if self._stopped is not None:
            await asyncio.shield(self._stopped)
            return
        self._lifecycle = "stopped"
        self._stopped = asyncio.get_running_loop().create_future()
        try:
            await self._stop()
        finally:
            self._stopped.set_result(None)

    @property
    def started(self) -> bool:
        return self._lifecycle == "started"

    async def _start(self) -> None:
        """Start what the component runs."""

    async def _stop(self) -> None:
        """Release what it holds; called once, also after a failed or missing start."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
