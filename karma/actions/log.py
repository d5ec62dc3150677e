"""`log`: write a message to the worker's log. The smallest useful action."""

from __future__ import annotations

import logging

from karma.executor import ActionContext, ActionResult, BaseActionExecutor
from karma.meta import ActionMeta, OutputDefinition, ParamDefinition, ParamType
from karma.registry import register_action

META = ActionMeta(
    type="log",
    name="Log a message",
    description="Writes a message to the worker log at the chosen level.",
    category="utility",
    icon="file-text",
    idempotent=True,
    params=(
        ParamDefinition(name="message", type=ParamType.STRING, required=True),
        ParamDefinition(
            name="level",
            type=ParamType.SELECT,
            options=("debug", "info", "warning", "error"),
            default="info",
        ),
    ),
    outputs=(OutputDefinition(name="logged", type=ParamType.STRING),),
)


@register_action(META)
class LogExecutor(BaseActionExecutor):
    async def execute(self, ctx: ActionContext) -> ActionResult:
        message = str(ctx.params["message"])
        ctx.logger.log(logging.getLevelNamesMapping()[str(ctx.params["level"]).upper()], message)
        return ActionResult(outputs={"logged": message})
