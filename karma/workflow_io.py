"""Inputs and outputs of the activities ActionWorkflow calls (pure models)."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from karma.envelope import Envelope, Transition
from karma.errors import ErrorInfo
from karma.executor import AwaitCallback, CallbackResult
from karma.interactive import AwaitDecision, Decision
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
    steps: list[str] = Field(default_factory=list, description="transactional actions")
    compensation_retry: RetryPolicy | None = None
    iterations_per_run: int = Field(default=100, ge=1, description="stateful actions")
    cache_key: str | None = Field(
        default=None, description="a cacheable type: recorded with the success"
    )


class CachedResult(BaseModel):
    """A success of the same type and params within the type's cache TTL (the ledger's)."""

    action_id: str
    outputs: dict[str, Any] = Field(default_factory=dict)


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
    cached: CachedResult | None = Field(
        default=None, description="the action ends at once with this earlier result"
    )
    ran_before: list[Transition] = Field(
        default_factory=list,
        description="the ledger's transitions of this action id from an earlier run (its "
        "workflow is gone from Temporal): the request is answered with them",
    )


class AttemptInput(BaseModel):
    """What every attempt of an executor method gets: the request, its (sealed) parameters,
    the attempt number and the transitions to publish while the executor runs."""

    request: ActionRequest
    params: dict[str, Any]
    attempt: int = Field(ge=1)
    pending: list[Transition] = Field(
        default_factory=list, description="transitions to publish while the executor runs"
    )


class ExecuteInput(AttemptInput):
    """`execute` (sync and event-driven actions; interactive ones once approved)."""

    decision: Decision | None = None


class AskInput(AttemptInput):
    """`ask`: an interactive action's question."""


class StepInput(AttemptInput):
    """`run_step`: one step of a transactional action."""

    step: str
    previous: dict[str, Any] = Field(default_factory=dict, description="earlier steps' outputs")


class IterateInput(AttemptInput):
    """`iterate`: one iteration of a stateful action."""

    state: dict[str, Any] | None = Field(default=None, description="None: the initial state")
    state_version: int = 0


class AttemptOutput(BaseModel):
    """What every attempt returns: outputs, what Kafka acknowledged meanwhile, when it ended
    (a replay-stable time for the transitions that follow), or why the action is skipped."""

    outputs: dict[str, Any] = Field(default_factory=dict)
    emitted_seq: int = 0
    finished_at: datetime | None = None
    skipped: str | None = Field(default=None, description="why the executor skipped the action")


class ExecuteOutput(AttemptOutput):
    awaiting: AwaitCallback | None = Field(
        default=None, description="set when an event-driven executor handed the work off"
    )


class AskOutput(AttemptOutput):
    asking: AwaitDecision | None = None


class StepOutput(AttemptOutput):
    compensation: dict[str, Any] = Field(
        default_factory=dict, description="the data the step's compensation will need"
    )


class Iteration(BaseModel):
    """What one stateful iteration decided: go on from `state` (after `delay`), or stop."""

    done: bool
    state: dict[str, Any] = Field(default_factory=dict)
    state_version: int = 1
    progress: float | None = None
    message: str = ""
    delay: timedelta = timedelta(0)


class IterateOutput(AttemptOutput):
    iteration: Iteration | None = None


class Phase(StrEnum):
    """Which executor method a legacy `execute_action` attempt calls (workflows started
    before each method had its own activity)."""

    EXECUTE = "execute"
    ASK = "ask"
    STEP = "step"
    ITERATE = "iterate"


class LegacyExecuteInput(ExecuteInput):
    """The input of the legacy `execute_action` activity."""

    phase: Phase = Phase.EXECUTE
    step: str = ""
    previous: dict[str, Any] = Field(default_factory=dict)
    state: dict[str, Any] | None = None
    state_version: int = 0


class CompensationDone(BaseModel):
    """What `compensate_step` returns (None in histories recorded before it did)."""

    finished_at: datetime | None = None


class JudgedCallback(CallbackResult):
    """What `handle_callback` returns: the executor's judgement and when it was made."""

    judged_at: datetime | None = None


class CompensateInput(BaseModel):
    request: ActionRequest
    params: dict[str, Any]
    step: str
    compensation: dict[str, Any] = Field(default_factory=dict)
    cause: ErrorInfo | None = None


class UndoneStep(BaseModel):
    step: str
    compensation: dict[str, Any] = Field(default_factory=dict)


class UndoneReport(BaseModel):
    """What a failed rollback leaves behind; published to the DLQ for a person to finish."""

    action_id: str
    action_type: str
    reason: str
    error: ErrorInfo | None = None
    undone: list[UndoneStep]


class CallbackInput(BaseModel):
    request: ActionRequest
    params: dict[str, Any]
    external_workflow_id: str
    event: Envelope
    outputs: dict[str, Any] = Field(default_factory=dict)


class ExecuteFailure(BaseModel):
    """Details of the ApplicationError an attempt raises when the executor fails."""

    error: ErrorInfo
    emitted_seq: int = 0
    failed_at: datetime | None = None


class ExecuteHeartbeat(BaseModel):
    """Heartbeat details of an attempt: after a lost worker the workflow still knows
    what Kafka acknowledged and does not publish it again."""

    emitted_seq: int = 0


class EmitInput(BaseModel):
    events: list[Transition]


class EmitOutput(BaseModel):
    emitted_seq: int


class EntropyScanInput(BaseModel):
    """One entropy scan: every whole window since the last one scanned."""

    dry_run: bool = Field(
        default=False,
        description="compute and return deviations; store and publish none (the baselines "
        "a window needs are learned and kept)",
    )
    since: datetime | None = Field(
        default=None,
        description="scan (again) the whole windows from here to `until` (default: now) "
        "instead of those since the last scan: a backfill",
    )
    until: datetime | None = None


class EntropyScanOutput(BaseModel):
    windows: list[tuple[datetime, datetime]] = Field(default_factory=list)
    observations: int = 0
    baselines_learned: int = 0
    deviations: int = 0
    published: int = 0
    # The most surprising first (at most 20), as `Deviation.as_json` gives them.
    top: list[dict[str, Any]] = Field(default_factory=list)
    decisions: list[dict[str, Any]] = Field(default_factory=list)  # the rules' (see rule_engine)


class RuleFiring(BaseModel):
    """A rule's schedule trigger firing."""

    rule: str
    at: datetime | None = Field(default=None, description="when it fired (set by the workflow)")


class RuleFiringOutput(BaseModel):
    decision: dict[str, Any] = Field(default_factory=dict)  # as `RuleDecision.as_json`
