"""`/v1/pipelines`: plan, run, follow and cancel pipelines of actions (what `karma pipeline`
does, over HTTP). A tenant-bound key runs its tenant's pipelines and sees only them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Header, Path, Response
from pydantic import BaseModel, Field
from temporalio.client import WorkflowQueryFailedError

from karma.api.auth import Caller, idempotency_key_of
from karma.api.problems import Problem, problems
from karma.client import KarmaClient
from karma.envelope import MAX_ID_CHARS
from karma.errors import ActionNotFoundError, ActionUnreadableError, FieldError
from karma.pipelines.client import PipelineHandle
from karma.pipelines.plan import plan
from karma.pipelines.run import PipelineStatus
from karma.pipelines.spec import PipelineSpec

_PIPELINE_ID = Path(pattern=r"^pl_[0-9a-f]{32}$", description="as `POST /v1/pipelines` gave it")


class PlanBody(BaseModel):
    spec: PipelineSpec
    params: dict[str, Any] = Field(default_factory=dict)


class RunBody(PlanBody):
    idempotency_key: str = Field(default="", max_length=MAX_ID_CHARS)
    entity_id: str = Field(default="", max_length=MAX_ID_CHARS)
    tenant: str = Field(default="", max_length=MAX_ID_CHARS)
    plan_hash: str = Field(
        default="", max_length=64, description="refuse the run unless it matches (a saved plan)"
    )


class PipelineCreated(BaseModel):
    pipeline_id: str
    workflow_id: str
    created: bool
    links: dict[str, str]


def install_pipeline_routes(app: FastAPI, client: KarmaClient, reader: Any, requester: Any) -> None:
    async def visible(caller: Caller, pipeline_id: str) -> tuple[PipelineHandle, PipelineStatus]:
        handle = client.pipeline(pipeline_id)
        try:
            status = await handle.status()
        except WorkflowQueryFailedError as exc:
            raise ActionUnreadableError(f"pipeline {pipeline_id}: {exc}") from exc
        tenant = status.transitions[0].tags.get("tenant", "") if status.transitions else ""
        if caller.tenant and tenant != caller.tenant:
            raise ActionNotFoundError(pipeline_id)
        return handle, status

    @app.post("/v1/pipelines/plan", tags=["pipelines"], responses=problems(400, 422))
    async def plan_pipeline(*, caller: Caller = reader, body: PlanBody) -> dict[str, Any]:
        """The plan of a spec for the params: waves, resolved params ("known after" where
        not yet), skipped steps, the plan hash (secret values redacted)."""
        return plan(body.spec, client.registry, body.params).as_json()

    @app.post(
        "/v1/pipelines",
        status_code=202,
        response_model=PipelineCreated,
        tags=["pipelines"],
        responses={
            200: {"model": PipelineCreated, "description": "the existing run"},
            **problems(400, 403, 409, 422, 503),
        },
    )
    async def run_pipeline(
        *,
        caller: Caller = requester,
        body: RunBody,
        response: Response,
        idempotency_key: Annotated[str | None, Header(max_length=MAX_ID_CHARS)] = None,
    ) -> PipelineCreated:
        """Check and start a pipeline: 202, or 200 with the existing run when the
        idempotency key names one; 409 when `plan_hash` no longer matches."""
        key = idempotency_key_of(body.idempotency_key, idempotency_key)
        tenant = caller.tenant_for(body.tenant)
        if body.plan_hash:
            planned = plan(body.spec, client.registry, body.params)
            if planned.plan_hash != body.plan_hash:
                reason = "the spec, the action types it uses or the params changed: plan again"
                raise Problem(409, reason, [FieldError(field="plan_hash", reason=reason)])
        handle = await client.start_pipeline(
            body.spec, body.params, idempotency_key=key, entity_id=body.entity_id, tenant=tenant
        )
        if not handle.created:
            response.status_code = 200
        location = f"/v1/pipelines/{handle.pipeline_id}"
        response.headers["Location"] = location
        return PipelineCreated(
            pipeline_id=handle.pipeline_id,
            workflow_id=handle.workflow_id,
            created=handle.created,
            links={"self": location},
        )

    @app.get(
        "/v1/pipelines/{pipeline_id}",
        response_model=PipelineStatus,
        tags=["pipelines"],
        responses=problems(404, 422, 503),
    )
    async def pipeline_status(
        *, caller: Caller = reader, pipeline_id: Annotated[str, _PIPELINE_ID]
    ) -> PipelineStatus:
        """A run's state, its steps (state, action id, outputs, reason, error) and its
        transitions."""
        return (await visible(caller, pipeline_id))[1]

    @app.post(
        "/v1/pipelines/{pipeline_id}/cancel",
        status_code=202,
        tags=["pipelines"],
        responses=problems(404, 409, 422, 503),
    )
    async def cancel_pipeline(
        *, caller: Caller = requester, pipeline_id: Annotated[str, _PIPELINE_ID]
    ) -> dict[str, str]:
        """Cancel a run: its running steps' actions are cancelled (a transactional one
        compensates), no further step starts; 409 once it has ended."""
        handle, status = await visible(caller, pipeline_id)
        if status.state.is_terminal:
            raise Problem(409, f"pipeline {pipeline_id} has ended ({status.state.value})")
        await handle.cancel()
        return {"pipeline_id": pipeline_id, "status": "cancel requested"}
