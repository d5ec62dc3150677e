"""Streaming actions on the embedded stack: `demo.tail` streams a file's lines to the
stream topic; a plain consumer of the topic reads every item exactly once, in order,
also when the worker running it is SIGKILLed mid-stream and another takes over."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from bridge.topic_reader import read_topics
from karma.client import ActionHandle, KarmaClient
from karma.lifecycle import ActionState, EventType
from karma.request import ActionRequest
from tests.conftest import unique
from tests.support.processes import KarmaProcess, karma_env
from workers.embedded import EmbeddedKarma

TIMEOUT_S = 120.0


def write_lines(path: Path, start: int, count: int) -> None:
    with path.open("a", encoding="utf-8") as out:
        out.writelines(f"line {n} {'x' * (n % 7)}\n" for n in range(start, start + count))


async def items_of(karma: EmbeddedKarma, action_id: str) -> list[dict[str, object]]:
    messages = await read_topics(karma.settings.kafka, [karma.settings.kafka.topics.stream])
    mine = [m for m in messages if m.key == action_id.encode()]
    assert len({m.partition for m in mine}) <= 1  # one partition: in order
    for message in mine:
        assert message.headers["karma-stream-seq"] == str(message.json()["seq"]).encode()
    return [m.json() for m in mine]


def assert_exactly_once_in_order(items: list[dict[str, object]], count: int) -> None:
    assert [i["seq"] for i in items] == list(range(count))
    assert [i["item"]["line"] for i in items] == list(range(count))  # type: ignore[index]
    assert items[-1]["item"] == {
        "line": count - 1,
        "text": f"line {count - 1} " + "x" * ((count - 1) % 7),
    }


async def test_a_followed_file_streams_each_line_once_in_order(
    karma: EmbeddedKarma, tmp_path: Path
) -> None:
    path = tmp_path / "app.log"
    write_lines(path, 0, 700)
    handle = await karma.client.request(
        "demo.tail", {"path": str(path), "lines": 1500, "per_second": 0}
    )
    await asyncio.sleep(0.5)
    write_lines(path, 700, 800)  # followed: the action waits for these
    outcome = await asyncio.wait_for(handle.result(), TIMEOUT_S)
    assert outcome.state is ActionState.SUCCEEDED and outcome.outputs["items"] == 1500
    status = await handle.status()
    progress = [t for t in status.transitions if t.event_type is EventType.PROGRESS]
    assert progress and all("items" in str(t.attrs) or "started" in str(t.attrs) for t in progress)
    assert_exactly_once_in_order(await items_of(karma, handle.action_id), 1500)


async def test_a_worker_killed_mid_stream_is_replaced_without_a_duplicate(
    karma: EmbeddedKarma, tmp_path: Path, report: Callable[[str], None]
) -> None:
    queue = unique("streaming-kill")
    env = karma_env(karma.settings, KARMA_TEMPORAL__TASK_QUEUE=queue)
    path = tmp_path / "big.log"
    write_lines(path, 0, 3000)
    client = KarmaClient(karma.temporal, task_queue=queue)
    first = KarmaProcess(["worker"], env, tmp_path / "worker-1.log")
    second: KarmaProcess | None = None
    try:
        await first.wait_for_output("worker on task queue", timeout=90)
        request = ActionRequest.new(
            "demo.tail", {"path": str(path), "lines": 3000, "per_second": 400}
        )
        handle: ActionHandle = await client.submit(request)
        deadline = asyncio.get_running_loop().time() + TIMEOUT_S
        while True:  # mid-stream: some items out, most not
            published = len(await items_of(karma, handle.action_id))
            if published >= 600:
                break
            assert asyncio.get_running_loop().time() < deadline, published
            await asyncio.sleep(0.1)
        first.kill()
        second = KarmaProcess(["worker"], env, tmp_path / "worker-2.log")
        await second.wait_for_output("worker on task queue", timeout=90)
        outcome = await asyncio.wait_for(handle.result(), TIMEOUT_S)
        assert outcome.state is ActionState.SUCCEEDED and outcome.outputs["items"] == 3000
        assert_exactly_once_in_order(await items_of(karma, handle.action_id), 3000)
        resumed = [
            line for line in (tmp_path / "worker-2.log").read_text().splitlines()
            if "resuming after item" in line
        ]  # fmt: skip
        how = resumed[0].split("karma.action: ")[-1] if resumed else "none past its last chunk"
        report(
            f"streaming: SIGKILL after {published} items were on Kafka; {how}; "
            "3000 items, each once, in order"
        )
    finally:
        first.ensure_stopped()
        if second is not None:
            second.ensure_stopped()
