"""What an action looks like from outside: its live status and its final outcome."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from karma.decision import Decision
from karma.errors import ErrorInfo
from karma.events import ActionEvent
from karma.lifecycle import ActionState


class ActionOutcome(BaseModel):
    """The end of an action: returned by the workflow on success, carried by its failure."""

    action_id: str
    action_type: str
    state: ActionState
    outputs: dict[str, Any] = Field(default_factory=dict)
    error: ErrorInfo | None = None
    attempts: int = 0
    duration_ms: int = 0
    reason: str = Field(default="", description="why the action was skipped")
    decision: Decision | None = None


class ActionStatus(BaseModel):
    """The answer of the `status` query."""

    action_id: str
    action_type: str
    state: ActionState
    attempt: int = 0
    outputs: dict[str, Any] = Field(default_factory=dict)
    error: ErrorInfo | None = None
    transitions: list[ActionEvent] = Field(default_factory=list)
    emitted_seq: int = Field(default=0, description="highest seq acknowledged by Kafka")
    external_workflow_id: str = Field(default="", description="set while waiting for events")
    pending_events: int = Field(default=0, description="external events not handled yet")
    decision_request: dict[str, Any] | None = Field(
        default=None, description="what an interactive action asks a person to decide"
    )
    decision: Decision | None = None
    compensated_steps: list[str] = Field(default_factory=list)
