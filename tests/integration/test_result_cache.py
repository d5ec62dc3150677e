"""The result cache of an idempotent type (`cache_ttl`), kept in the ledger: a matching
request ends at once with the earlier outputs and `cached_from`, the executor untouched;
other params, a failure or a different secret run again; an entry is found only within
the TTL; the key holds no secret in clear; each transition is on Kafka and in the ledger
once."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from karma.client import ActionHandle
from karma.lifecycle import ActionState, EventType
from karma.status import ActionOutcome
from tests.conftest import unique
from tests.support.actions import CachedExecutor
from tests.support.checks import assert_mirrored
from workers.embedded import EmbeddedKarma

TIMEOUT_S = 60


async def run(
    karma: EmbeddedKarma, params: dict[str, object]
) -> tuple[ActionHandle, ActionOutcome]:
    handle = await karma.client.request("test.cached", params)
    return handle, await asyncio.wait_for(handle.result(), TIMEOUT_S)


async def in_ledger(karma: EmbeddedKarma, action_id: str) -> list[object]:
    """The action's rows once its terminal one is in the ledger (the cache reads it)."""
    async with asyncio.timeout(TIMEOUT_S):
        while True:
            rows = await asyncio.to_thread(karma.ledger.transitions, [action_id])
            if rows and rows[-1].state in ("SUCCEEDED", "FAILED"):  # type: ignore[attr-defined]
                return list(rows)
            await asyncio.sleep(0.05)


async def test_a_matching_request_is_answered_from_the_cache(karma: EmbeddedKarma) -> None:
    host, token = unique("db"), unique("tok-")
    first, outcome = await run(karma, {"host": host, "token": token})
    assert outcome.state is ActionState.SUCCEEDED and outcome.cached_from is None
    assert outcome.outputs == {"host": host, "run": 1}
    rows = await in_ledger(karma, first.action_id)
    key = rows[-1].attrs["cache_key"]  # type: ignore[attr-defined]
    assert len(key) == 64 and token not in key

    # Same type and params, the params in another order: the cache answers.
    again, outcome = await run(karma, {"token": token, "host": host})
    assert outcome.state is ActionState.SUCCEEDED and outcome.cached_from == first.action_id
    assert outcome.outputs == {"host": host, "run": 1}
    assert CachedExecutor.calls[host] == 1
    status = await again.status()
    assert [t.event_type for t in status.transitions] == [
        EventType.REQUESTED, EventType.ACCEPTED, EventType.SUCCEEDED,
    ]  # fmt: skip
    ended = status.transitions[-1].attrs
    assert ended["cached_from"] == first.action_id and "cache_key" not in ended

    # Another secret, other params, or a failure: the executor runs.
    _, other_token = await run(karma, {"host": host, "token": unique("tok-")})
    _, no_token = await run(karma, {"host": host})
    assert other_token.cached_from is None and no_token.cached_from is None
    assert CachedExecutor.calls[host] == 3
    failing = unique("down")
    failed, outcome = await run(karma, {"host": failing, "fail": True})
    assert outcome.state is ActionState.FAILED
    await in_ledger(karma, failed.action_id)
    _, outcome = await run(karma, {"host": failing, "fail": True})
    assert outcome.state is ActionState.FAILED and CachedExecutor.calls[failing] == 2

    # The TTL counts from the success that ran (a cached answer does not renew it): the
    # ledger's entry is found from its time on, and not a millisecond after.
    ran_at = rows[-1].ts  # type: ignore[attr-defined]
    found = await asyncio.to_thread(karma.ledger.cached_result, "test.cached", key, ran_at)
    assert found == (first.action_id, {"host": host, "run": 1})
    later = ran_at + timedelta(milliseconds=1)
    assert await asyncio.to_thread(karma.ledger.cached_result, "test.cached", key, later) is None

    # Each transition once on Kafka and in the ledger; the secret in none of them.
    await assert_mirrored(karma, [await first.status(), status])
    published = json.dumps(
        [r.attrs for r in await in_ledger(karma, again.action_id)]  # type: ignore[attr-defined]
    )
    assert token not in published
