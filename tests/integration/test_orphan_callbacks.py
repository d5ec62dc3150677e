"""A callback whose action cannot be found yet waits off the hot path: callbacks for other
actions, even on the same partition, go straight through."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime

from karma.lifecycle import ActionState
from tests.conftest import unique
from tests.support.kafka import dead_letters_at, produce_each
from tests.support.messages import envelope
from tests.support.waiting import waiting_jobs
from workers.embedded import EmbeddedKarma

JOBS = 10
ORPHANS = 50


async def test_orphans_do_not_hold_back_the_callbacks_of_running_jobs(
    karma: EmbeddedKarma, report: Callable[[str], None]
) -> None:
    kafka = karma.settings.kafka
    resolve_timeout = karma.settings.ingress.resolve_timeout_s
    externals, handles = await waiting_jobs(karma, JOBS)

    # One partition (one key) for everything: the worst case for head-of-line blocking.
    messages: list[tuple[str, bytes | None]] = []
    orphans = [unique("nobody") for _ in range(ORPHANS)]
    for index, external in enumerate(externals):
        for orphan in orphans[index * 5 : index * 5 + 5]:
            messages.append((kafka.topics.callbacks, callback(orphan, "done")))
        messages.append((kafka.topics.callbacks, callback(external, "step")))
        messages.append((kafka.topics.callbacks, callback(external, "done", answer=index)))
    loop = asyncio.get_running_loop()
    sent_at = time.time()
    positions = await produce_each(kafka, messages, key=b"same-partition")
    produced_at = loop.time()

    ended: dict[str, float] = {}
    async with asyncio.timeout(resolve_timeout):  # long before any orphan gives up
        while len(ended) < JOBS:
            for handle in handles:
                if handle.action_id not in ended and (await handle.status()).state.is_terminal:
                    ended[handle.action_id] = loop.time()
            await asyncio.sleep(0.05)
    delays = [ended[h.action_id] - produced_at for h in handles]
    report(f"longest callback delay with {ORPHANS} orphans on the partition: {max(delays):.2f}s")
    assert max(delays) < 3.0
    for index, handle in enumerate(handles):
        outcome = await handle.result()
        assert (outcome.state, outcome.outputs["answer"]) == (ActionState.SUCCEEDED, index)

    orphan_positions = [
        p for p, (_, value) in zip(positions, messages, strict=True) if b"nobody" in (value or b"")
    ]
    letters = await dead_letters_at(kafka, orphan_positions, timeout=resolve_timeout + 30)
    for position in orphan_positions:
        assert len(letters[position]) == 1, position
        letter = letters[position][0]
        assert "orphan event: no running action waits for external id" in letter.reason
        # It was looked for the whole resolve timeout after it reached Kafka, not longer.
        waited = datetime.fromisoformat(letter.ts).timestamp() - sent_at
        assert resolve_timeout - 1 <= waited <= resolve_timeout + 15, waited
    report(f"{ORPHANS} orphans dead-lettered once each, {resolve_timeout:g}s after arriving")


def callback(external: str, event_type: str, **attrs: object) -> bytes:
    return envelope(event_type, attrs={"external_workflow_id": external, **attrs})
