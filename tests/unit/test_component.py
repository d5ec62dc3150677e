"""One lifecycle for every long-lived part: start once, stop safely, clean up a failed start."""

from __future__ import annotations

import pytest

from karma.component import Component


class Recorder(Component):
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[str] = []
        self._fail = fail

    async def _start(self) -> None:
        self.calls.append("start")
        if self._fail:
            raise OSError("cannot connect")

    async def _stop(self) -> None:
        self.calls.append("stop")


async def test_start_once_stop_as_often_as_you_like() -> None:
    part = Recorder()
    async with part:
        assert part.started
        with pytest.raises(RuntimeError, match="Recorder cannot start twice"):
            await part.start()
    await part.stop()
    assert part.calls == ["start", "stop"]
    with pytest.raises(RuntimeError, match="cannot start twice"):
        await part.start()  # not after stop either


async def test_a_failed_start_stops_what_it_started() -> None:
    part = Recorder(fail=True)
    with pytest.raises(OSError, match="cannot connect"):
        await part.start()
    assert part.calls == ["start", "stop"]
    await part.stop()
    assert part.calls == ["start", "stop"]


async def test_stop_before_start_releases_once() -> None:
    part = Recorder()
    await part.stop()
    await part.stop()
    assert part.calls == ["stop"]
