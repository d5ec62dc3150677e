"""`demo.scale`: scales a model on a cluster, both named by reference (checked by the
inventory's resolvers before the action is accepted), with a templated change note; its
results are reused for ten minutes (the result cache)."""

from __future__ import annotations

from datetime import timedelta

from karma.executor import ActionContext, ActionResult, BaseActionExecutor
from karma.meta import ActionMeta, OutputDefinition, ParamDefinition, ParamType
from karma.registry import register_action

META = ActionMeta(
    type="demo.scale",
    name="Scale a model on a cluster",
    description="Scales a model deployment; cluster and model are references to the inventory.",
    category="demo",
    icon="layers",
    idempotent=True,
    cache_ttl=timedelta(minutes=10),
    params=(
        ParamDefinition(name="cluster", type=ParamType.REF, ref_kind="cluster", required=True),
        ParamDefinition(name="model", type=ParamType.REF, ref_kind="model", required=True),
        ParamDefinition(name="replicas", type=ParamType.NUMBER, default=2, min=0, max=64),
        ParamDefinition(
            name="note",
            type=ParamType.TEMPLATE,
            default="scale {{ params.model }} to {{ params.replicas }} on {{ params.cluster }}",
            description="the change note (Jinja2)",
        ),
    ),
    outputs=(
        OutputDefinition(name="cluster"),
        OutputDefinition(name="model"),
        OutputDefinition(name="replicas", type=ParamType.NUMBER),
        OutputDefinition(name="note"),
    ),
)


@register_action(META)
class ScaleExecutor(BaseActionExecutor):
    async def execute(self, ctx: ActionContext) -> ActionResult:
        params = ctx.params
        ctx.logger.info("%s", params["note"])
        return ActionResult(
            outputs={
                "cluster": params["cluster"],
                "model": params["model"],
                "replicas": params["replicas"],
                "note": params["note"],
            }
        )
