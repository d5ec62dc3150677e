"""`demo.approval`: an interactive action — a person approves a change before it is made."""

from __future__ import annotations

from datetime import timedelta

from karma.executor import ActionContext, ActionResult, Skip
from karma.interactive import AwaitDecision, InteractiveActionExecutor, TimeoutPolicy
from karma.meta import ActionMeta, ExecutionMode, OutputDefinition, ParamDefinition, ParamType
from karma.registry import register_action

META = ActionMeta(
    type="demo.approval",
    name="Apply a change once approved",
    description="Asks for approval (karma approve|reject), then applies the change.",
    category="demo",
    icon="check-circle",
    mode=ExecutionMode.INTERACTIVE,
    params=(
        ParamDefinition(name="change", type=ParamType.STRING, required=True),
        ParamDefinition(
            name="timeout_seconds", type=ParamType.NUMBER, default=3600, min=0.1, max=30 * 86_400
        ),
        ParamDefinition(
            name="on_timeout",
            type=ParamType.SELECT,
            options=tuple(p.value for p in TimeoutPolicy),
            default=TimeoutPolicy.REJECT.value,
        ),
    ),
    outputs=(
        OutputDefinition(name="applied", type=ParamType.STRING),
        OutputDefinition(name="approved_by", type=ParamType.STRING),
    ),
)


@register_action(META)
class ApprovalExecutor(InteractiveActionExecutor):
    async def ask(self, ctx: ActionContext) -> AwaitDecision | Skip:
        change = str(ctx.params["change"])
        if not change.strip():
            return Skip(reason="an empty change needs no approval")
        return AwaitDecision(
            request={"change": change, "entity": ctx.entity_id, "question": f"apply {change}?"},
            timeout=timedelta(seconds=float(ctx.params["timeout_seconds"])),
            on_timeout=TimeoutPolicy(ctx.params["on_timeout"]),
        )

    async def execute(self, ctx: ActionContext) -> ActionResult:
        decided_by = ctx.decision.by if ctx.decision else ""
        return ActionResult(outputs={"applied": ctx.params["change"], "approved_by": decided_by})
