"""The action lifecycle: states, transition event types and where each one is published.

REQUESTED → ACCEPTED → STARTED → (RETRYING)* → {SUCCEEDED | FAILED | CANCELLED | TIMED_OUT}.
Each arrow is one event; progress is an event too but not a change of state.
"""

from __future__ import annotations

from enum import StrEnum


class ActionState(StrEnum):
    """Where an action stands; the value is what search attributes and ClickHouse show."""

    REQUESTED = "REQUESTED"
    ACCEPTED = "ACCEPTED"
    STARTED = "STARTED"
    RETRYING = "RETRYING"
    WAITING = "WAITING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {ActionState.SUCCEEDED, ActionState.FAILED, ActionState.CANCELLED, ActionState.TIMED_OUT}
)


class EventType(StrEnum):
    """The `event_type` of a transition envelope."""

    REQUESTED = "action.requested"
    ACCEPTED = "action.accepted"
    STARTED = "action.started"
    RETRYING = "action.retrying"
    WAITING = "action.waiting"
    PROGRESS = "action.progress"
    SUCCEEDED = "action.succeeded"
    FAILED = "action.failed"
    CANCELLED = "action.cancelled"
    TIMED_OUT = "action.timed_out"

    @property
    def state(self) -> ActionState | None:
        """The state this event moves the action into; None for progress."""
        if self is EventType.PROGRESS:
            return None
        return ActionState(self.value.removeprefix("action.").upper())

    @property
    def topic_kind(self) -> TopicKind:
        if self is EventType.REQUESTED:
            return TopicKind.REQUESTED
        state = self.state
        if state is not None and state.is_terminal:
            return TopicKind.RESULT
        return TopicKind.PROGRESS


class TopicKind(StrEnum):
    """The Kafka topics Karma mirrors transitions to (names are configurable)."""

    REQUESTED = "requested"
    PROGRESS = "progress"
    RESULT = "result"
