"""The circuit breaker's state machine, on a clock the test moves."""

from __future__ import annotations

import asyncio

import pytest

from karma.breakers import (
    BreakerPolicy,
    Breakers,
    BreakerSettings,
    CircuitBreaker,
    CircuitOpenError,
    State,
    target_of,
)
from karma.errors import PermanentError, TransientError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


POLICY = BreakerPolicy(failure_rate=0.5, minimum_calls=4, window=6, open_s=10, half_open_probes=2)


def breaker(clock: Clock, policy: BreakerPolicy = POLICY) -> CircuitBreaker:
    return CircuitBreaker("http://svc:80", policy, clock=clock)


def calls(b: CircuitBreaker, *outcomes: bool) -> None:
    for ok in outcomes:
        b.allow()
        b.record(ok)


def test_it_opens_at_the_failure_rate_once_there_are_enough_calls() -> None:
    clock = Clock()
    b = breaker(clock)
    calls(b, False, False, False)  # 3 of 3 failed, but fewer than minimum_calls
    assert b.state is State.CLOSED
    calls(b, True)  # 3 of 4: over the rate
    assert b.state is State.OPEN
    with pytest.raises(CircuitOpenError) as caught:
        b.allow()
    assert caught.value.retry_after == pytest.approx(10.1)
    assert "circuit_open: http://svc:80" in str(caught.value)


def test_a_healthy_rate_keeps_it_closed_over_a_sliding_window() -> None:
    b = breaker(Clock())
    calls(b, *([True, True, False] * 10))  # a third fail: under the rate
    assert b.state is State.CLOSED
    calls(b, False)  # the window (the last 6) now holds 3 failures: the rate
    assert b.state is State.OPEN


def test_half_open_lets_probes_through_and_closes_after_them() -> None:
    clock = Clock()
    b = breaker(clock)
    calls(b, False, False, False, False)
    clock.now += 4
    with pytest.raises(CircuitOpenError) as caught:
        b.allow()
    assert caught.value.retry_after == pytest.approx(6.1)
    clock.now += 6
    b.allow()
    b.allow()  # two probes in flight
    assert b.state is State.HALF_OPEN
    with pytest.raises(CircuitOpenError):
        b.allow()  # a third waits
    b.record(True)
    assert b.state is State.HALF_OPEN
    b.record(True)
    assert b.state is State.CLOSED
    calls(b, False, False, False)  # outcomes from before were forgotten
    assert b.state is State.CLOSED


def test_a_failed_probe_opens_it_again_for_a_whole_period() -> None:
    clock = Clock()
    b = breaker(clock)
    calls(b, False, False, False, False)
    clock.now += 10
    b.allow()
    b.record(False)
    assert b.state is State.OPEN and b.remaining_s() == pytest.approx(10)


def test_a_cancelled_probe_frees_its_slot_and_disabled_never_opens() -> None:
    clock = Clock()
    b = breaker(clock, POLICY.model_copy(update={"half_open_probes": 1}))
    calls(b, False, False, False, False)
    clock.now += 10
    b.allow()
    b.release()
    b.allow()  # the slot is free again
    off = breaker(clock, POLICY.model_copy(update={"enabled": False}))
    calls(off, *([False] * 20))
    assert off.state is State.CLOSED


async def test_guard_counts_transient_errors_as_failures_and_answers_as_successes() -> None:
    clock = Clock()
    policy = BreakerPolicy(minimum_calls=3, failure_rate=0.6, open_s=5)
    breakers = Breakers(BreakerSettings(targets={"http://a:1": policy}), clock=clock)
    for _ in range(2):
        with pytest.raises(PermanentError):
            async with breakers.guard("http://a:1/x"):
                raise PermanentError("404")  # the target answered
    assert breakers.for_target("http://a:1").state is State.CLOSED
    for _ in range(3):  # 3 of 5 failed
        with pytest.raises(TransientError):
            async with breakers.guard("http://A:1/y?z"):
                raise TransientError("503")
    with pytest.raises(CircuitOpenError):
        async with breakers.guard("http://a:1/other"):
            pytest.fail("an open breaker lets no call through")
    with pytest.raises(asyncio.CancelledError):
        async with breakers.guard("http://b:2/"):
            raise asyncio.CancelledError
    snapshot = {s["target"]: s for s in breakers.snapshot()}
    assert snapshot["http://a:1"]["state"] == "open" and snapshot["http://b:2"]["state"] == "closed"
    assert target_of("https://Host:8443/p?q=1") == "https://host:8443"


def test_a_call_from_before_the_breaker_opened_judges_nothing_after() -> None:
    clock = Clock()
    b = breaker(clock, POLICY.model_copy(update={"half_open_probes": 1}))
    slow = b.allow()  # let through while closed, answers late
    calls(b, False, False, False, False)
    clock.now += 10
    probe = b.allow()
    assert b.state is State.HALF_OPEN
    b.record(True, ticket=slow)  # stale: does not close it
    assert b.state is State.HALF_OPEN
    with pytest.raises(CircuitOpenError):
        b.allow()  # nor free the probe's slot
    b.record(True, ticket=probe)
    assert b.state is State.CLOSED


def test_targets_hide_credentials_and_name_the_port() -> None:
    assert target_of("https://user:S3cret@Host/x") == "https://host:443"
    assert target_of("http://host") == target_of("http://HOST:80/y")
    assert target_of("no url") == "(not a URL)"
    settings = BreakerSettings(targets={"http://Svc": BreakerPolicy(open_s=1)})
    assert list(settings.targets) == ["http://svc:80"]
    with pytest.raises(ValueError, match="minimum_calls"):
        BreakerPolicy(window=3, minimum_calls=5)


async def test_a_full_pool_on_this_side_is_not_the_targets_failure() -> None:
    from karma.errors import LocalTransientError

    policy = BreakerPolicy(minimum_calls=1, failure_rate=0.5, window=1)
    breakers = Breakers(BreakerSettings(default=policy))
    for _ in range(3):
        with pytest.raises(LocalTransientError):
            async with breakers.guard("http://busy:1/"):
                raise LocalTransientError("no free connection")
    assert breakers.for_target("http://busy:1").state is State.CLOSED
