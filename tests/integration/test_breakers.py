"""A circuit breaker on the embedded stack: the reference service answers 503, the
breaker of its base URL opens after the threshold, attempts fail at once without reaching
it (RETRYING says circuit_open and names it), the half-open probe closes the breaker once
the service recovered, and every action ends SUCCEEDED within its attempts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from karma.breakers import BREAKERS, BreakerPolicy, State, target_of
from karma.client import ActionHandle
from karma.lifecycle import ActionState, EventType
from karma.request import ActionRequest
from workers.embedded import EmbeddedKarma

ATTEMPTS = 6
TIMEOUT_S = 60


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    """Once `condition` holds (asked every 50 ms, for TIMEOUT_S at most)."""
    for _ in range(int(TIMEOUT_S / 0.05)):
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(condition)


async def test_a_breaker_opens_spares_the_service_and_closes_after_a_probe(
    karma: EmbeddedKarma,
) -> None:
    service = karma.reference_service
    assert service is not None
    target = target_of(service.url)
    policy = BreakerPolicy(minimum_calls=2, failure_rate=0.5, open_s=6, half_open_probes=1)
    BREAKERS.set_policy(target, policy)
    service.ping_status, service.pings = 503, 0
    try:

        async def request() -> ActionHandle:
            made = ActionRequest.new("http_request", {"url": f"{service.url}/ping"})
            made = made.model_copy(update={"max_attempts": ATTEMPTS})
            return await karma.client.submit(made)

        first = await request()
        breaker = BREAKERS.for_target(target)

        async def opened() -> bool:
            return breaker.state is State.OPEN

        await until(opened)
        reached_while_failing = service.pings
        assert reached_while_failing == 2  # the threshold: two calls, both failed
        second = await request()

        async def refused() -> bool:
            status = await second.status()
            return any(
                t.event_type is EventType.RETRYING and "circuit_open" in str(t.attrs)
                for t in status.transitions
            )

        await until(refused)
        status = await second.status()
        retrying = next(t for t in status.transitions if t.event_type is EventType.RETRYING)
        assert retrying.attrs["error"]["code"] == "CircuitOpenError"
        assert target in retrying.attrs["error"]["message"]
        assert service.pings == reached_while_failing  # refused without calling it
        service.ping_status = 200  # recovered: the next probe closes the breaker
        outcomes = [await asyncio.wait_for(h.result(), TIMEOUT_S) for h in (first, second)]
        assert [o.state for o in outcomes] == [ActionState.SUCCEEDED, ActionState.SUCCEEDED]
        assert all(o.attempts <= ATTEMPTS for o in outcomes)
        assert breaker.state is State.CLOSED
        # Only the two failures and the two successes reached it: no call while open.
        assert service.pings == reached_while_failing + 2
    finally:
        service.ping_status = 200
        BREAKERS.set_policy(target, BreakerPolicy())
