"""The action lifecycle: states, transition event types and where each one is published.

REQUESTED → ACCEPTED → STARTED → (RETRYING)* → (WAITING)* →
    {SUCCEEDED | FAILED | CANCELLED | TIMED_OUT | SKIPPED};
a transactional action that fails or is cancelled goes through COMPENSATING → COMPENSATED
first. Each arrow is one event; progress, a compensated step, an escalation and a decision
are events too but not changes of state.
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
    COMPENSATING = "COMPENSATING"
    COMPENSATED = "COMPENSATED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"
    SKIPPED = "SKIPPED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {
        ActionState.SUCCEEDED,
        ActionState.FAILED,
        ActionState.CANCELLED,
        ActionState.TIMED_OUT,
        ActionState.SKIPPED,
    }
)


class EventType(StrEnum):
    """The `event_type` of a transition envelope."""

    REQUESTED = "action.requested"
    ACCEPTED = "action.accepted"
    STARTED = "action.started"
    RETRYING = "action.retrying"
    WAITING = "action.waiting"
    PROGRESS = "action.progress"
    COMPENSATING = "action.compensating"
    STEP_COMPENSATED = "action.step_compensated"
    COMPENSATED = "action.compensated"
    ESCALATED = "action.escalated"
    DECIDED = "action.decided"
    SUCCEEDED = "action.succeeded"
    FAILED = "action.failed"
    CANCELLED = "action.cancelled"
    TIMED_OUT = "action.timed_out"
    SKIPPED = "action.skipped"
    # A pipeline of actions (`PipelineWorkflow`): its own transitions, under its own id.
    PIPELINE_REQUESTED = "pipeline.requested"
    PIPELINE_STARTED = "pipeline.started"
    PIPELINE_STEP_STARTED = "pipeline.step_started"
    PIPELINE_STEP_ENDED = "pipeline.step_ended"
    PIPELINE_COMPENSATING = "pipeline.compensating"
    PIPELINE_STEP_COMPENSATED = "pipeline.step_compensated"
    PIPELINE_SUCCEEDED = "pipeline.succeeded"
    PIPELINE_FAILED = "pipeline.failed"
    PIPELINE_CANCELLED = "pipeline.cancelled"

    @property
    def state(self) -> ActionState | None:
        """The state this event moves the action into; None for events within a state."""
        if self in _WITHIN_A_STATE:
            return None
        name = self.value.partition(".")[2]
        return ActionState(name.upper())

    @property
    def is_pipeline(self) -> bool:
        return self.value.startswith("pipeline.")

    @property
    def topic_kind(self) -> TopicKind:
        if self in (EventType.REQUESTED, EventType.PIPELINE_REQUESTED):
            return TopicKind.REQUESTED
        state = self.state
        if state is not None and state.is_terminal:
            return TopicKind.RESULT
        return TopicKind.PROGRESS


_WITHIN_A_STATE = frozenset(
    {
        EventType.PROGRESS,
        EventType.STEP_COMPENSATED,
        EventType.ESCALATED,
        EventType.DECIDED,
        EventType.PIPELINE_STEP_STARTED,
        EventType.PIPELINE_STEP_ENDED,
        EventType.PIPELINE_STEP_COMPENSATED,
    }
)


class TopicKind(StrEnum):
    """The Kafka topics Karma mirrors transitions to (names are configurable)."""

    REQUESTED = "requested"
    PROGRESS = "progress"
    RESULT = "result"
