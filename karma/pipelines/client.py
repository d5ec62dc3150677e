"""Starting and following pipeline runs (the SDK side of PipelineWorkflow)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Mapping
from datetime import timedelta
from typing import Any, TypeVar

from temporalio.client import Client, WorkflowFailureError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from karma import names, search_attributes
from karma.envelope import EventSource
from karma.errors import ActionNotFoundError, FieldError, ValidationError
from karma.ids import new_pipeline_id, pipeline_id_for_key, pipeline_workflow_id
from karma.params import REDACTED
from karma.pipelines.plan import check, pipeline_params, plan, registry_hash, spec_hash
from karma.pipelines.run import PipelineRequest, PipelineStatus
from karma.pipelines.spec import PipelineSpec, references
from karma.request import RESERVED_TAGS, reserved_tag_errors
from karma.secrets import SecretSealer
from karma.web_ui import details

QUERY_TIMEOUT_S = 10.0
T = TypeVar("T")


class PlanOutdatedError(ValidationError):
    """A saved plan no longer matches the spec, the registry or the params."""


def prepare(
    spec: PipelineSpec,
    registry: Any,
    params: Mapping[str, Any],
    *,
    sealer: SecretSealer | None,
    idempotency_key: str = "",
    entity_id: str = "",
    tenant: str = "",
    tags: Mapping[str, str] | None = None,
    saved_plan: Mapping[str, Any] | None = None,
) -> PipelineRequest:
    """A checked request; against a saved plan (`karma pipeline plan -o`) when given.

    Raises:
        karma.errors.ValidationError: the spec, the params, or the ids.
        PlanOutdatedError: the saved plan was made for another spec, registry or params.
    """
    reserved = reserved_tag_errors(tags, RESERVED_TAGS | {"pipeline", "pipeline_step"})
    if reserved:
        raise ValidationError(reserved)
    check(spec, registry)
    checked = pipeline_params(spec, dict(params))
    planned = plan(spec, registry, checked)
    if saved_plan is not None:
        _check_saved(spec, registry, planned.plan_hash, saved_plan)
    if sealer is not None:
        secret = {n for n, p in spec.params.items() if p.secret}
        checked = sealer.seal_named(secret, checked)
        spec = sealed_steps(spec, registry, sealer)
    pipeline_id = (
        pipeline_id_for_key(idempotency_key, tenant) if idempotency_key else new_pipeline_id()
    )
    try:
        return PipelineRequest(
            pipeline_id=pipeline_id,
            spec=spec,
            params=checked,
            idempotency_key=idempotency_key,
            entity_id=entity_id,
            tenant=tenant,
            tags=dict(tags or {}),
            source=EventSource(),
            plan_hash=planned.plan_hash,
        )
    except ValueError as exc:
        raise ValidationError([FieldError(field="request", reason=str(exc))]) from exc


def sealed_steps(spec: PipelineSpec, registry: Any, sealer: SecretSealer) -> PipelineSpec:
    """The spec with the values written in it for secret params sealed: they travel to
    the worker in the workflow's input, never in clear."""
    steps = []
    for step in spec.steps:
        secret = {
            name
            for name in registry.meta(step.action).secret_params
            if name in step.params and not references(step.params[name])
        }
        sealed = sealer.seal_named(secret, step.params) if secret else step.params
        steps.append(step.model_copy(update={"params": sealed}))
    out = spec.model_copy(update={"steps": steps})
    out._by_id = {}  # the copy's own steps, not the original's
    return out


def shown_spec(spec: PipelineSpec, registry: Any) -> dict[str, Any]:
    """The spec as a saved plan keeps it: the values written for secret params `***`."""
    document = spec.model_dump(mode="json", by_alias=True)
    for step, shown in zip(spec.steps, document["steps"], strict=True):
        meta = registry.meta(step.action)
        for name in meta.secret_params & set(step.params):
            if not references(step.params[name]):
                shown["params"][name] = REDACTED
    return document


def holds_redacted(spec: PipelineSpec, registry: Any) -> bool:
    """Whether a spec read back from a saved plan lost secret values."""
    return any(
        step.params.get(name) == REDACTED
        for step in spec.steps
        if step.action in registry
        for name in registry.meta(step.action).secret_params
    )


def _check_saved(
    spec: PipelineSpec, registry: Any, plan_hash: str, saved: Mapping[str, Any]
) -> None:
    changed = []
    if saved.get("spec_hash") != spec_hash(spec):
        changed.append("the spec")
    if saved.get("registry_hash") != registry_hash(spec, registry):
        changed.append("the action types it uses")
    if not changed and saved.get("plan_hash") != plan_hash:
        changed.append("the params")
    if changed:
        reason = f"{' and '.join(changed)} changed since the plan was made: plan again"
        raise PlanOutdatedError([FieldError(field="plan", reason=reason)])


class PipelineHandle:
    def __init__(self, temporal: Client, pipeline_id: str, *, created: bool = True) -> None:
        self.pipeline_id = pipeline_id
        self.workflow_id = pipeline_workflow_id(pipeline_id)
        self.created = created
        self._handle = temporal.get_workflow_handle(self.workflow_id, result_type=PipelineStatus)

    async def _call(self, rpc: Awaitable[T]) -> T:
        """Temporal's answer, with its "not found" as ActionNotFoundError."""
        try:
            return await rpc
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise ActionNotFoundError(self.pipeline_id) from exc
            raise

    async def status(self) -> PipelineStatus:
        """The pipeline's live state (its steps, their actions, its transitions)."""
        timeout = timedelta(seconds=QUERY_TIMEOUT_S)
        query = self._handle.query(
            names.STATUS_QUERY, result_type=PipelineStatus, rpc_timeout=timeout
        )
        return await self._call(query)

    async def result(self) -> PipelineStatus:
        """Its end: the status when it SUCCEEDED, FAILED or was CANCELLED alike."""
        try:
            return await self._call(self._handle.result())
        except WorkflowFailureError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.details:
                return PipelineStatus.model_validate(cause.details[0])
            return await self.status()

    async def cancel(self) -> None:
        await self._call(self._handle.cancel())

    async def watch(self, poll_s: float = 0.5) -> AsyncIterator[PipelineStatus]:
        """Its status each time it changes, until it ends."""
        last = -1
        while True:
            status = await self.status()
            if len(status.transitions) != last:
                last = len(status.transitions)
                yield status
            if status.state.is_terminal:
                return
            await asyncio.sleep(poll_s)


async def start(
    temporal: Client, request: PipelineRequest, *, task_queue: str, index: bool
) -> PipelineHandle:
    """Start a prepared request; the same idempotency key again answers the same run."""
    as_action = request.as_action()
    try:
        await temporal.start_workflow(
            names.PIPELINE_WORKFLOW,
            request,
            id=pipeline_workflow_id(request.pipeline_id),
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=search_attributes.initial(as_action) if index else None,
            static_summary=f"pipeline {request.spec.name} {request.entity_id}".strip(),
            static_details=details(as_action),
        )
    except WorkflowAlreadyStartedError:
        return PipelineHandle(temporal, request.pipeline_id, created=False)
    return PipelineHandle(temporal, request.pipeline_id)
