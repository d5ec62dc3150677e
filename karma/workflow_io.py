"""Inputs and outputs of the activities ActionWorkflow calls (pure models)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

from karma.errors import ErrorInfo
from karma.events import ActionEvent, Envelope
from karma.executor import AwaitEvent
from karma.meta import ExecutionMode, RetryPolicy
from karma.request import ActionRequest


class ExecutionPlan(BaseModel):
    """How the workflow runs an accepted action, taken from its metadata."""

    mode: ExecutionMode
    meta_version: str
    retry: RetryPolicy
    timeout: timedelta
    heartbeat_timeout: timedelta
    output_names: list[str] = Field(default_factory=list)


class PreparedAction(BaseModel):
    """Result of `prepare_action`: validated parameters and a plan, or why the request is bad.

    `prepared_at` times the transitions that follow validation: after a local activity the
    workflow clock differs between the first run and a replay, a recorded result does not.
    """

    prepared_at: datetime
    params: dict[str, Any] = Field(default_factory=dict)
    requested_args: dict[str, Any] = Field(
        default_factory=dict, description="the parameters as requested, secrets redacted"
    )
    accepted_args: dict[str, Any] = Field(
        default_factory=dict, description="the validated parameters, secrets redacted"
    )
    plan: ExecutionPlan | None = None
    error: ErrorInfo | None = None


class ExecuteInput(BaseModel):
    request: ActionRequest
    params: dict[str, Any]
    attempt: int = Field(ge=1)
    pending: list[ActionEvent] = Field(
        default_factory=list, description="transitions to publish while the executor runs"
    )


class ExecuteOutput(BaseModel):
    outputs: dict[str, Any] = Field(default_factory=dict)
    emitted_seq: int = 0
    awaiting: AwaitEvent | None = Field(
        default=None, description="set when an event-driven executor handed the work off"
    )


class HandleEventInput(BaseModel):
    request: ActionRequest
    params: dict[str, Any]
    external_workflow_id: str
    event: Envelope
    outputs: dict[str, Any] = Field(default_factory=dict)


class ExecuteFailure(BaseModel):
    """Details of the ApplicationError `execute_action` raises when the executor fails."""

    error: ErrorInfo
    emitted_seq: int = 0


class ExecuteHeartbeat(BaseModel):
    """Heartbeat details of `execute_action`: after a lost worker the workflow still knows
    what Kafka acknowledged and does not publish it again."""

    emitted_seq: int = 0


class EmitInput(BaseModel):
    events: list[ActionEvent]


class EmitOutput(BaseModel):
    emitted_seq: int
