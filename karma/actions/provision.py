"""`demo.provision`: a transactional action (saga) — reserve, configure, activate.

A step named by `fail_at` fails permanently, and the steps before it are compensated in
reverse order. `already_provisioned` makes the action unnecessary: it ends SKIPPED.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from karma.errors import PermanentError
from karma.executor import Skip
from karma.meta import (
    ActionMeta,
    ExecutionMode,
    OutputDefinition,
    ParamDefinition,
    ParamType,
    RetryPolicy,
)
from karma.registry import register_action
from karma.saga import (
    CompensationContext,
    StepContext,
    StepResult,
    TransactionalActionExecutor,
)

STEPS = ("reserve", "configure", "activate")

META = ActionMeta(
    type="demo.provision",
    name="Provision a service",
    description="Reserves capacity, configures and activates a service; undoes what was done "
    "when a step fails or the action is cancelled.",
    category="demo",
    icon="server",
    mode=ExecutionMode.TRANSACTIONAL,
    timeout=timedelta(minutes=2),
    params=(
        ParamDefinition(name="name", type=ParamType.STRING, default="svc-1"),
        ParamDefinition(
            name="fail_at",
            type=ParamType.SELECT,
            options=("none", *STEPS),
            default="none",
            description="the step that fails (permanently)",
        ),
        ParamDefinition(name="step_seconds", type=ParamType.NUMBER, default=0.1, min=0, max=600),
        ParamDefinition(
            name="compensate_seconds",
            type=ParamType.NUMBER,
            default=0,
            min=0,
            max=600,
            description="how long each compensation takes",
        ),
        ParamDefinition(
            name="features",
            type=ParamType.MULTISELECT,
            options=("tls", "backups", "metrics"),
            description="what the configure step turns on",
        ),
        ParamDefinition(
            name="already_provisioned",
            type=ParamType.BOOLEAN,
            default=False,
            description="nothing to do: the action is skipped",
        ),
    ),
    outputs=(
        OutputDefinition(name="reservation", type=ParamType.STRING),
        OutputDefinition(name="config_version", type=ParamType.NUMBER),
        OutputDefinition(name="features", type=ParamType.MULTISELECT),
        OutputDefinition(name="endpoint", type=ParamType.STRING),
    ),
    retry=RetryPolicy(max_attempts=2, initial_interval=timedelta(milliseconds=200)),
)


@register_action(META)
class ProvisionExecutor(TransactionalActionExecutor):
    steps = STEPS
    compensation_retry = RetryPolicy(
        max_attempts=5,
        initial_interval=timedelta(milliseconds=200),
        maximum_interval=timedelta(seconds=2),
    )

    async def run_step(self, ctx: StepContext) -> StepResult | Skip:
        name = str(ctx.params["name"])
        if ctx.step == "reserve" and ctx.params["already_provisioned"]:
            return Skip(reason=f"{name} is already provisioned")
        await asyncio.sleep(float(ctx.params["step_seconds"]))
        if ctx.params["fail_at"] == ctx.step:
            raise PermanentError(f"{ctx.step} of {name} failed")
        match ctx.step:
            case "reserve":
                reservation = f"rsv-{ctx.action_id[-8:]}"
                return StepResult(
                    outputs={"reservation": reservation},
                    compensation={"reservation": reservation},
                )
            case "configure":
                features = sorted(ctx.params.get("features") or [])
                return StepResult(
                    outputs={"config_version": 2, "features": features},
                    compensation={"previous": 1},
                )
            case _:
                endpoint = f"https://{name}.example.internal"
                return StepResult(outputs={"endpoint": endpoint}, compensation={"name": name})

    async def compensate(self, ctx: CompensationContext) -> None:
        await asyncio.sleep(float(ctx.params["compensate_seconds"]))
        ctx.logger.info("undid %s with %s", ctx.step, dict(ctx.compensation))
