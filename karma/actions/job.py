"""`demo.job`: an event-driven action run by the reference jobs service.

`execute` submits the job and hands off (AwaitCallback on the job id); the service's events
then come back through Kafka: progress, then completion or failure. A `silent` job never
ends, so the action times out.
"""

from __future__ import annotations

from datetime import timedelta

from karma.errors import PermanentError
from karma.executor import (
    ActionContext,
    ActionResult,
    AwaitCallback,
    CallbackContext,
    CallbackResult,
    EventDrivenActionExecutor,
)
from karma.meta import ActionMeta, ExecutionMode, OutputDefinition, ParamDefinition, ParamType
from karma.registry import register_action

META = ActionMeta(
    type="demo.job",
    name="Run a job on the reference service",
    description="Submits a job to the jobs service and waits for its completion events.",
    category="demo",
    icon="briefcase",
    mode=ExecutionMode.EVENT_DRIVEN,
    required_services=("jobs",),
    timeout=timedelta(seconds=30),
    params=(
        ParamDefinition(name="steps", type=ParamType.NUMBER, default=3, min=0, max=1000),
        ParamDefinition(name="step_seconds", type=ParamType.NUMBER, default=0.2, min=0, max=3600),
        ParamDefinition(
            name="outcome",
            type=ParamType.SELECT,
            options=("succeeded", "failed", "silent"),
            default="succeeded",
        ),
        ParamDefinition(
            name="wait_seconds",
            type=ParamType.NUMBER,
            default=60,
            min=0.1,
            max=7 * 86_400,
            description="how long to wait for the job's completion",
        ),
        ParamDefinition(
            name="anonymous",
            type=ParamType.BOOLEAN,
            default=False,
            description="the service's events name only its job id, not the action",
        ),
    ),
    outputs=(
        OutputDefinition(name="job_id", type=ParamType.STRING),
        OutputDefinition(name="result", type=ParamType.JSON),
    ),
)


@register_action(META)
class JobExecutor(EventDrivenActionExecutor):
    async def execute(self, ctx: ActionContext) -> ActionResult | AwaitCallback:
        p = ctx.params
        body = await ctx.invoke_service(
            "jobs",
            "POST",
            "/jobs",
            json={
                "steps": int(p["steps"]),
                "step_seconds": float(p["step_seconds"]),
                "outcome": p["outcome"],
                "result": {"entity": ctx.entity_id},
                "anonymous": bool(p["anonymous"]),
            },
        )
        job_id = body.get("job_id") if isinstance(body, dict) else None
        if not isinstance(job_id, str) or not job_id:
            raise PermanentError(f"the jobs service answered without a job_id: {body!r}")
        return AwaitCallback(
            external_workflow_id=job_id,
            timeout=timedelta(seconds=float(p["wait_seconds"])),
            outputs={"job_id": job_id},
        )

    async def on_callback(self, ctx: CallbackContext) -> CallbackResult:
        attrs = ctx.callback.attrs
        if attrs.get("external_workflow_id") != ctx.external_workflow_id:
            return CallbackResult.ignore(
                f"about {attrs.get('external_workflow_id')!r}, not this job"
            )
        match ctx.callback.event_type:
            case "job.progress":
                return CallbackResult.progress(attrs.get("percent"), str(attrs.get("message", "")))
            case "job.completed":
                return CallbackResult.complete({"result": attrs.get("result")})
            case "job.failed":
                return CallbackResult.fail(str(attrs.get("error", "the job failed")))
            case other:
                return CallbackResult.ignore(f"unexpected event type {other!r}")
