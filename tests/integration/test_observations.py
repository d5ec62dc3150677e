"""Observations on the real stack: `karma observe` publishes JSON lines to
events.normalized, the bridge writes each once to `observations` (the convention's step,
status and duration in their columns), and what cannot be used is dead-lettered with the
reason and its bytes while the sink goes on."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.conftest import unique
from tests.support.kafka import dead_letters_at, produce_each
from tests.support.processes import karma_env, run_karma
from workers.embedded import EmbeddedKarma


async def stored(karma: EmbeddedKarma, correlation_id: str, count: int) -> list[dict[str, Any]]:
    """The run's observations once `count` are stored (and a moment more for extras)."""
    async with asyncio.timeout(30):
        while True:
            rows = await asyncio.to_thread(karma.ledger.observations, correlation_id=correlation_id)
            if len(rows) >= count:
                await asyncio.sleep(0.5)  # a duplicate would have arrived by now
                return await asyncio.to_thread(
                    karma.ledger.observations, correlation_id=correlation_id
                )
            await asyncio.sleep(0.1)


async def test_karma_observe_stores_each_observation_once(karma: EmbeddedKarma) -> None:
    run = unique("run")
    lines = [
        {"ts": "2026-11-25T10:00:00Z", "event_type": "deploy.step", "entity_id": "svc:web",
         "correlation_id": run, "attrs": {"step": "build", "duration_ms": 1500, "status": "ok"}},
        {"ts": "2026-11-25T10:00:02Z", "event_type": "deploy.step", "entity_id": "svc:web",
         "correlation_id": run, "attrs": {"step": "test", "status": "failed"}, "tags": {"ci": "1"}},
    ]  # fmt: skip
    text = "\n".join(json.dumps(line) for line in lines) + "\n"
    env = karma_env(karma.settings)
    for _ in range(2):  # the same file twice: stored once (ids derived from the lines)
        code, out = await run_karma(["observe", "-"], env, stdin=text.encode())
        assert code == 0, out
        assert "published 2 observation(s) to events.normalized" in out
    rows = await stored(karma, run, 2)
    assert [(r["step"], r["status"], r["duration_ms"]) for r in rows] == [
        ("build", "ok", 1500),
        ("test", "failed", None),  # the source did not know it
    ]
    assert rows[1]["tags"] == {"ci": "1"}
    assert all(r["event_id"].startswith("obs_") and r["entity_id"] == "svc:web" for r in rows)
    assert json.loads(rows[0]["attrs"])["step"] == "build"


async def test_a_file_with_a_bad_line_publishes_nothing(karma: EmbeddedKarma) -> None:
    run = unique("run")
    good = json.dumps({"event_type": "x", "correlation_id": run})
    text = "\n".join([good, '{"event_type": "x", "attrs": {"duration_ms": -5}}', "nope"])
    code, out = await run_karma(["observe", "-"], karma_env(karma.settings), stdin=text.encode())
    assert code == 2, out
    assert "line 2: attrs.duration_ms: must be a number of milliseconds from 0" in out
    assert "line 3:" in out
    assert "nothing was published" in out
    code, out = await run_karma(["observe", "/no/such/file.jsonl"], karma_env(karma.settings))
    assert code == 2, out
    assert "cannot read /no/such/file.jsonl" in out
    await asyncio.sleep(1)
    assert await asyncio.to_thread(karma.ledger.observations, correlation_id=run) == []


async def test_what_cannot_be_an_observation_is_dead_lettered_and_the_sink_goes_on(
    karma: EmbeddedKarma,
) -> None:
    kafka = karma.settings.kafka
    topic = kafka.topics.observations
    run = unique("run")
    after = {"ts": "2026-11-25T10:00:00Z", "event_type": "ok", "correlation_id": run}
    bad = [
        b"\xff not json",
        json.dumps({"ts": "2026-11-25T10:00:00Z", "event_type": "x", "action_id": "a"}).encode(),
        json.dumps({"event_type": "no time"}).encode(),
    ]
    positions = await produce_each(kafka, [(topic, value) for value in bad])
    await produce_each(kafka, [(topic, json.dumps(after).encode())])
    letters = await dead_letters_at(kafka, positions)
    reasons = {}
    for position, found in letters.items():
        assert len(found) == 1, (position, found)  # each once
        assert found[0].stage == "observations"
        reasons[found[0].value] = found[0].reason
    assert "action_id: an observation names no action" in reasons[bad[1]]
    assert "ts" in reasons[bad[2]]
    assert [r["event_type"] for r in await stored(karma, run, 1)] == ["ok"]


async def test_a_backfill_spanning_many_months_is_stored_whole(karma: EmbeddedKarma) -> None:
    """ClickHouse takes rows of at most 100 partitions in one insert: a batch of 150 months
    is split until it goes in (it must not stop the sink, nor reach the DLQ)."""
    run = unique("backfill")
    lines = [
        json.dumps({
            "ts": f"{2000 + i // 12}-{i % 12 + 1:02d}-01T00:00:00Z",
            "event_type": "nightly",
            "entity_id": "job:etl",
            "correlation_id": run,
            "attrs": {"step": "load", "duration_ms": i},
        })
        for i in range(150)
    ]  # fmt: skip
    text = "\n".join(lines).encode()
    code, out = await run_karma(["observe", "-"], karma_env(karma.settings), stdin=text)
    assert code == 0, out
    rows = await stored(karma, run, 150)
    assert sorted(r["duration_ms"] for r in rows) == list(range(150))
