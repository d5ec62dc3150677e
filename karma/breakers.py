"""Circuit breakers: one per external target (the base URL `http_request` and
`invoke_service` call), so that a failing dependency is left alone for a while instead of
being hammered by every attempt of every action.

CLOSED: calls go through; the last `window` outcomes are kept, and once there are at least
`minimum_calls` of them with a failure rate of `failure_rate` or more, the breaker OPENS.
OPEN: calls fail at once (CircuitOpenError: transient, `retry_after` = the time left)
for `open_s`, then the breaker is HALF_OPEN: up to `half_open_probes` calls go through;
when that many succeeded it CLOSES (outcomes forgotten), and a failed probe OPENS it again.

What counts: a transport failure, a timeout, 5xx and 429 are failures; any answer the
service gave on purpose (2xx, 4xx) is a success. The state is per worker process.

Libraries considered: purgatory, aiobreaker and pybreaker count consecutive failures
only (no failure rate over a window with a minimum of calls), so the state machine is
here, small and tested on its own (tests/unit/test_breakers.py).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator, model_validator

from karma.errors import LocalTransientError, TransientError

log = logging.getLogger(__name__)


class BreakerPolicy(BaseModel):
    enabled: bool = True
    failure_rate: float = Field(default=0.5, gt=0, le=1, description="opens at this rate")
    minimum_calls: int = Field(default=5, ge=1, description="outcomes needed to judge")
    window: int = Field(default=20, ge=1, description="the last outcomes judged")
    open_s: float = Field(default=30.0, gt=0, description="how long it stays open")
    half_open_probes: int = Field(default=1, ge=1, description="successes that close it")

    @model_validator(mode="after")
    def _judgeable(self) -> BreakerPolicy:
        if self.window < self.minimum_calls:
            raise ValueError("window must hold at least minimum_calls outcomes")
        return self


class BreakerSettings(BaseModel):
    """`KARMA_BREAKERS__DEFAULT__*`; per target (scheme://host:port)
    `KARMA_BREAKERS__TARGETS='{"http://host:8080": {"open_s": 60}}'`."""

    default: BreakerPolicy = Field(default_factory=BreakerPolicy)
    targets: dict[str, BreakerPolicy] = Field(default_factory=dict)

    @field_validator("targets")
    @classmethod
    def _normalised(cls, targets: dict[str, BreakerPolicy]) -> dict[str, BreakerPolicy]:
        return {target_of(k): v for k, v in targets.items()}


RETRY_SLACK_S = 0.1
HALF_OPEN_WAIT_S = 5.0


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpenError(TransientError):
    """The target's breaker is open: the attempt did not call it."""

    def __init__(self, target: str, retry_after: float) -> None:
        super().__init__(
            f"circuit_open: {target} is failing; not called (again in {retry_after:.1f} s)",
            retry_after=retry_after,
        )
        self.target = target


Clock = Callable[[], float]


class CircuitBreaker:
    def __init__(
        self,
        target: str,
        policy: BreakerPolicy,
        *,
        clock: Clock = time.monotonic,
        on_change: Callable[[str, State, State], None] | None = None,
    ) -> None:
        self.target = target
        self.policy = policy
        self.state = State.CLOSED
        self._clock = clock
        self._outcomes: deque[bool] = deque(maxlen=policy.window)
        self._opened_at = 0.0
        self._probes = 0  # in flight while half-open
        self._probe_successes = 0
        # Each state change starts a generation: an outcome of a call let through in an
        # earlier one says nothing about this one (a slow call that began closed).
        self._generation = 0
        self._on_change = on_change
        self.last_error = ""

    def _move(self, to: State) -> None:
        before, self.state = self.state, to
        self._generation += 1
        if before is not to and self._on_change is not None:
            self._on_change(self.target, before, to)

    def remaining_s(self) -> float:
        return max(0.0, self._opened_at + self.policy.open_s - self._clock())

    def allow(self) -> int:
        """Before a call: the ticket `record` and `release` are given after it.

        Raises:
            CircuitOpenError: open (or half-open with every probe in flight).
        """
        if not self.policy.enabled:
            return self._generation
        if self.state is State.OPEN:
            if self.remaining_s() > 0:
                # A little past the end: a retry timed to the end finds it half-open.
                raise CircuitOpenError(self.target, self.remaining_s() + RETRY_SLACK_S)
            self._move(State.HALF_OPEN)
            self._probes = self._probe_successes = 0
        if self.state is State.HALF_OPEN:
            if self._probes >= self.policy.half_open_probes:
                # The probes decide soon; a refused attempt counts against its action's
                # attempts, so it comes back once they likely did, not at once.
                raise CircuitOpenError(self.target, min(self.policy.open_s, HALF_OPEN_WAIT_S))
            self._probes += 1
        return self._generation

    def record(self, ok: bool, error: str = "", ticket: int | None = None) -> None:
        """After a call that `allow` let through (`ticket`: what `allow` returned)."""
        if not self.policy.enabled:
            return
        if ticket is not None and ticket != self._generation:
            return  # let through in an earlier state: it judges nothing now
        if not ok:
            self.last_error = error
        if self.state is State.HALF_OPEN:
            self._probes = max(0, self._probes - 1)
            if not ok:
                self._open()
                return
            self._probe_successes += 1
            if self._probe_successes >= self.policy.half_open_probes:
                self._outcomes.clear()
                self._move(State.CLOSED)
            return
        if self.state is State.OPEN:
            return  # a call let through before it opened
        self._outcomes.append(ok)
        calls = len(self._outcomes)
        failures = calls - sum(self._outcomes)
        if calls >= self.policy.minimum_calls and failures / calls >= self.policy.failure_rate:
            self._open()

    def release(self, ticket: int | None = None) -> None:
        """A call let through ended without an outcome (cancelled, or a local failure)."""
        if ticket is not None and ticket != self._generation:
            return
        if self.state is State.HALF_OPEN:
            self._probes = max(0, self._probes - 1)

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._outcomes.clear()
        self._move(State.OPEN)

    def snapshot(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "state": self.state.value,
            "open_for_s": round(self.remaining_s(), 3) if self.state is State.OPEN else 0.0,
            "recent_calls": len(self._outcomes),
            "recent_failures": len(self._outcomes) - sum(self._outcomes),
            "last_error": self.last_error,
        }


DEFAULT_PORTS = {"http": 80, "https": 443}


def target_of(url: str) -> str:
    """A URL's breaker: its scheme, host and port (never its credentials)."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.scheme or not parts.hostname:
        return "(not a URL)"
    scheme = parts.scheme.lower()
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port or DEFAULT_PORTS.get(scheme, 0)}"


class Breakers:
    """Every target's breaker in this process."""

    def __init__(self, settings: BreakerSettings | None = None, *, clock: Clock = time.monotonic):
        self._settings = settings or BreakerSettings()
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    def configure(self, settings: BreakerSettings) -> None:
        """Policies from settings (each worker of a process gives the same: only a change
        starts the breakers again)."""
        if settings == self._settings:
            return
        self._settings = settings
        self._breakers.clear()

    def set_policy(self, target: str, policy: BreakerPolicy) -> None:
        """One target's policy (its breaker starts again, closed)."""
        self._settings = self._settings.model_copy(
            update={"targets": {**self._settings.targets, target: policy}}
        )
        self._breakers.pop(target, None)

    def for_target(self, target: str) -> CircuitBreaker:
        breaker = self._breakers.get(target)
        if breaker is None:
            policy = self._settings.targets.get(target, self._settings.default)
            breaker = CircuitBreaker(target, policy, clock=self._clock, on_change=_changed)
            self._breakers[target] = breaker
        return breaker

    @contextlib.asynccontextmanager
    async def guard(self, url: str) -> AsyncIterator[None]:
        """Around one call to `url`: refused while its breaker is open; a TransientError
        raised inside counts as a failure, anything else as an answer.

        Raises:
            CircuitOpenError: the target's breaker is open.
        """
        breaker = self.for_target(target_of(url))
        ticket = breaker.allow()
        try:
            yield
        except LocalTransientError:
            breaker.release(ticket)  # this side's trouble (a full pool): not the target's
            raise
        except TransientError as exc:
            breaker.record(False, str(exc)[:300], ticket)
            raise
        except Exception:
            breaker.record(True, ticket=ticket)  # the target answered; the caller disliked it
            raise
        except BaseException:
            breaker.release(ticket)  # cancelled: says nothing about the target
            raise
        breaker.record(True, ticket=ticket)

    def snapshot(self) -> list[dict[str, Any]]:
        return [b.snapshot() for _, b in sorted(self._breakers.items())]


def _changed(target: str, before: State, after: State) -> None:
    from karma.metrics import BREAKER_STATE, BREAKER_TRANSITIONS

    log.warning("circuit breaker for %s: %s -> %s", target, before.value, after.value)
    BREAKER_TRANSITIONS.labels(target=target, to=after.value).inc()
    for state in State:
        BREAKER_STATE.labels(target=target, state=state.value).set(int(state is after))


BREAKERS = Breakers()  # this process's; the worker configures it from its settings
