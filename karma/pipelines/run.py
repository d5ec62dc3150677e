"""A pipeline run: its request, its steps' states and the decisions taken between steps.

Pure and deterministic (no I/O, no clock): `PipelineWorkflow` calls it, and so can tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from karma.envelope import EventSource, Id, Tags, Transition
from karma.errors import ErrorInfo, ErrorType, FieldError, ValidationError
from karma.lifecycle import ActionState
from karma.pipelines.plan import ancestors, evaluate, redacted, resolve
from karma.pipelines.spec import PipelineSpec, Step, names_used, references
from karma.request import CONTRACT, ActionRequest

PIPELINE_ACTION_TYPE = "pipeline"  # the `action` tag of a pipeline's own transitions


class StepState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    NOT_RUN = "not_run"  # the pipeline stopped (a failure, a cancellation) before it
    COMPENSATED = "compensated"  # it succeeded, then the pipeline's rollback undid it

    @property
    def is_final(self) -> bool:
        return self not in (StepState.PENDING, StepState.RUNNING)

    @property
    def failed(self) -> bool:
        return self in (StepState.FAILED, StepState.CANCELLED, StepState.TIMED_OUT)


FROM_ACTION = {
    ActionState.SUCCEEDED: StepState.SUCCEEDED,
    ActionState.SKIPPED: StepState.SKIPPED,
    ActionState.FAILED: StepState.FAILED,
    ActionState.CANCELLED: StepState.CANCELLED,
    ActionState.TIMED_OUT: StepState.TIMED_OUT,
}


class PipelineRequest(BaseModel):
    """The input of a PipelineWorkflow: a checked spec and its checked params (secret
    values sealed)."""

    pipeline_id: Id = Field(min_length=1)
    spec: PipelineSpec
    params: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: Id = ""
    entity_id: Id = ""
    tenant: str = ""
    tags: Tags = Field(default_factory=dict)
    source: EventSource = Field(default_factory=EventSource)
    plan_hash: str = ""
    contract: int = CONTRACT

    def as_action(self) -> ActionRequest:
        """The pipeline as its own transitions see it: an action of type `pipeline`."""
        return ActionRequest(
            action_id=self.pipeline_id,
            action_type=PIPELINE_ACTION_TYPE,
            idempotency_key=self.idempotency_key,
            entity_id=self.entity_id,
            tenant=self.tenant,
            tags={**self.tags, "pipeline": self.spec.name},
            source=self.source,
            contract=self.contract,
        )

    def redacted_params(self) -> dict[str, Any]:
        return redacted(self.spec, self.params)


class StepResult(BaseModel):
    id: str
    action: str
    state: StepState = StepState.PENDING
    action_id: str = ""
    outputs: dict[str, Any] = Field(default_factory=dict)
    error: ErrorInfo | None = None
    reason: str = ""


class PipelineStatus(BaseModel):
    """The answer of a pipeline's `status` query, and its result."""

    pipeline_id: str
    name: str
    state: ActionState
    steps: list[StepResult]
    error: ErrorInfo | None = None
    plan_hash: str = ""
    transitions: list[Transition] = Field(default_factory=list)

    def step(self, step_id: str) -> StepResult:
        return next(s for s in self.steps if s.id == step_id)


def child_request(
    request: PipelineRequest,
    step: Step,
    params: dict[str, Any],
    done: Mapping[str, StepResult] | None = None,
) -> ActionRequest:
    """The ActionRequest of one step: its id follows from the pipeline's and the step's
    (a pipeline run again by its worker starts no second action). Its TEMPLATE params
    read `steps.<id>.outputs` of the steps it (transitively) needs that succeeded."""
    child = ActionRequest.new(
        step.action,
        params,
        idempotency_key=f"{request.pipeline_id}.{step.id}",
        entity_id=request.entity_id,
        correlation_id=request.pipeline_id,
        tenant=request.tenant,
        tags={**request.tags, "pipeline": request.spec.name, "pipeline_step": step.id},
        source=request.source,
    )
    if step.retry is not None and step.retry.max_attempts is not None:
        child = child.model_copy(update={"max_attempts": step.retry.max_attempts})
    # Only the steps its params name: a child's input stays small in a large pipeline.
    written = " ".join(str(v) for v in [*step.params.values(), *params.values()])
    needed = ancestors(request.spec).get(step.id, set()) if done else set()
    outputs = {
        n: {"outputs": done[n].outputs}
        for n in sorted(needed)
        if done and n in done and done[n].state is StepState.SUCCEEDED and n in written
    }
    if outputs:
        child = child.model_copy(update={"template_context": {"steps": outputs}})
    return child


def _outputs_read(expressions: list[str]) -> set[str]:
    """The steps whose outputs the expressions read."""
    out = set()
    for expression in expressions:
        for parts in names_used(expression):
            if len(parts) >= 3 and parts[0] == "steps" and parts[2] == "outputs":
                out.add(parts[1])
    return out


def decide(
    step: Step, steps: dict[str, StepResult], params: dict[str, Any]
) -> tuple[StepState, str, ErrorInfo | None] | dict[str, Any]:
    """Once every step it needs ended: its resolved params (it runs), or why it does not
    (skipped, or failed when its condition or params cannot be evaluated)."""
    needs = [steps[n] for n in step.needs]
    if needs and all(n.state in (StepState.SKIPPED, StepState.NOT_RUN) for n in needs):
        return StepState.SKIPPED, "every step it needs is skipped", None
    failed = [n.id for n in needs if n.state.failed or n.state is StepState.NOT_RUN]
    if failed:
        return StepState.SKIPPED, f"needs {', '.join(failed)}, which did not succeed", None
    expressions = [r for v in step.params.values() for r in references(v)]
    if step.if_ is not None:
        expressions.append(step.if_)
    try:
        unread = sorted(
            s for s in _outputs_read(expressions) if steps[s].state is not StepState.SUCCEEDED
        )
    except ValueError as exc:  # checked before the run; a spec changed under it
        return StepState.FAILED, "", _invalid(f"steps.{step.id}", str(exc))
    if unread:
        return StepState.SKIPPED, f"reads the outputs of {', '.join(unread)}, not run", None
    view = {
        s.id: {"outputs": s.outputs, "state": s.state.value, "action_id": s.action_id}
        for s in steps.values()
        if s.state.is_final
    }
    try:
        if step.if_ is not None and not evaluate(
            step.if_, params, view, field=f"steps.{step.id}.if"
        ):
            return StepState.SKIPPED, f"condition false: {step.if_}", None
        return {
            name: resolve(value, params, view, field=f"steps.{step.id}.params.{name}")
            for name, value in step.params.items()
        }
    except ValidationError as exc:
        return StepState.FAILED, "", ErrorInfo.from_exception(exc)
    except Exception as exc:  # noqa: BLE001 - Unknown: a step outside its needs
        return StepState.FAILED, "", _invalid(f"steps.{step.id}", f"cannot evaluate: {exc}")


def _invalid(field: str, reason: str) -> ErrorInfo:
    return ErrorInfo.from_exception(ValidationError([FieldError(field=field, reason=reason)]))


def stopped_by(step: StepResult) -> ErrorInfo:
    """The pipeline's error when `step` failed and stops it."""
    cause = step.error.message if step.error else step.state.value
    error_type = step.error.type if step.error else ErrorType.INTERNAL
    return ErrorInfo(type=error_type, message=f"step {step.id} {step.state.value}: {cause}")
