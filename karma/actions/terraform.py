"""`terraform`: init, plan and apply (or destroy) a Terraform or OpenTofu configuration,
as a transactional action: the plan's text and counts are outputs, and an apply is
compensated, when the action is undone (a pipeline's rollback), by a targeted destroy of
`restore_targets` when they are given.

The binary is `binary` when given, else `terraform`, else `tofu`, found on the worker's
PATH. `vars` and `env` are secret; their values are masked in the captured output.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

from karma.actions import _process
from karma.actions.command import judge
from karma.errors import PermanentError
from karma.meta import (
    ActionMeta,
    ExecutionMode,
    OutputDefinition,
    ParamDefinition,
    ParamType,
    RetryPolicy,
)
from karma.registry import register_action
from karma.saga import CompensationContext, StepContext, StepResult, TransactionalActionExecutor

BINARIES = ("terraform", "tofu")
SUMMARY = re.compile(r"Plan: (\d+) to add, (\d+) to change, (\d+) to destroy")
NO_CHANGES = "No changes."

META = ActionMeta(
    type="terraform",
    name="Terraform / OpenTofu",
    description="Plans and applies (or destroys) a configuration; the plan is recorded, and "
    "an apply can be undone by a targeted destroy.",
    category="deployment",
    icon="layers",
    mode=ExecutionMode.TRANSACTIONAL,
    timeout=timedelta(hours=1),
    params=(
        ParamDefinition(name="dir", type=ParamType.STRING, required=True),
        ParamDefinition(
            name="operation",
            type=ParamType.SELECT,
            options=("apply", "destroy", "plan"),
            default="apply",
        ),
        ParamDefinition(name="vars", type=ParamType.JSON, secret=True, description="-var k=v"),
        ParamDefinition(name="env", type=ParamType.JSON, secret=True),
        ParamDefinition(name="binary", type=ParamType.STRING, description="default: on PATH"),
        ParamDefinition(
            name="restore_targets",
            type=ParamType.JSON,
            default=[],
            description="resources a compensation destroys (-target), e.g. aws_instance.web",
        ),
        ParamDefinition(
            name="timeout_seconds", type=ParamType.NUMBER, default=1800, min=1, max=86_400
        ),
        ParamDefinition(
            name="max_output_bytes", type=ParamType.NUMBER, default=65_536, min=0, max=1_048_576
        ),
    ),
    outputs=(
        OutputDefinition(name="plan", type=ParamType.STRING),
        OutputDefinition(name="to_add", type=ParamType.NUMBER),
        OutputDefinition(name="to_change", type=ParamType.NUMBER),
        OutputDefinition(name="to_destroy", type=ParamType.NUMBER),
        OutputDefinition(name="applied", type=ParamType.BOOLEAN),
    ),
    retry=RetryPolicy(max_attempts=2),
)


def binary(params: Any) -> str:
    if params.get("binary"):
        return str(params["binary"])
    for name in BINARIES:
        found = shutil.which(name)
        if found:
            return found
    raise PermanentError("neither terraform nor tofu is on the worker's PATH (or set binary)")


def _vars(params: Any) -> dict[str, str]:
    """`vars` as TF_VAR_<name> variables: never on the command line (`ps` shows that)."""
    given = params.get("vars") or {}
    if not isinstance(given, dict):
        raise PermanentError("vars: an object of variables")
    return {f"TF_VAR_{k}": v if isinstance(v, str) else json.dumps(v) for k, v in given.items()}


def _leaves(value: Any) -> list[str]:
    """Every string a value holds (a map's values, a list's items), and its JSON."""
    if isinstance(value, dict):
        return [json.dumps(value), *(s for v in value.values() for s in _leaves(v))]
    if isinstance(value, list):
        return [json.dumps(value), *(s for v in value for s in _leaves(v))]
    return [value if isinstance(value, str) else json.dumps(value)]


def _secrets(params: Any) -> list[str]:
    return [s for key in ("vars", "env") for s in _leaves(params.get(key) or {})]


async def _run(params: Any, args: list[str], *, transient: frozenset[int] = frozenset()) -> str:
    env = params.get("env") or {}
    if not isinstance(env, dict):
        raise PermanentError("env: an object of variables")
    finished = await _process.run(
        [binary(params), f"-chdir={params['dir']}", *args],
        cwd=None,
        env=_process.environment({"TF_IN_AUTOMATION": "1", **env, **_vars(params)}, inherit=False),
        timeout_s=float(params["timeout_seconds"]),
        max_output_bytes=int(params["max_output_bytes"]),
        secrets=_secrets(params),
    )
    judge(finished, {0}, set(transient))
    return finished.stdout


def plan_file(action_id: str) -> str:
    return f"karma-{action_id[-16:]}.tfplan"


@register_action(META)
class TerraformExecutor(TransactionalActionExecutor):
    steps = ("init", "plan", "apply")

    async def run_step(self, ctx: StepContext) -> StepResult:
        params = ctx.params
        if ctx.step == "init":
            await _run(params, ["init", "-input=false", "-no-color"], transient=frozenset({1}))
            return StepResult()
        if ctx.step == "plan":
            destroy = ["-destroy"] if params["operation"] == "destroy" else []
            args = ["plan", "-input=false", "-no-color", f"-out={plan_file(ctx.action_id)}"]
            text = await _run(params, [*args, *destroy])
            found = SUMMARY.search(text)
            counts = [int(n) for n in found.groups()] if found else [0, 0, 0]
            if found is None and NO_CHANGES not in text:
                raise PermanentError("the plan printed no summary (Plan: … or No changes.)")
            return StepResult(
                outputs={
                    "plan": text,
                    "to_add": counts[0],
                    "to_change": counts[1],
                    "to_destroy": counts[2],
                    "applied": False,
                }
            )
        if params["operation"] == "plan":
            return StepResult(outputs={"applied": False})
        targets = params.get("restore_targets") or []
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise PermanentError("restore_targets: a list of resource addresses")
        saved = Path(params["dir"]) / plan_file(ctx.action_id)
        args = ["apply", "-input=false", "-no-color", "-auto-approve", saved.name]
        try:
            await _run(params, args)
        finally:
            saved.unlink(missing_ok=True)  # it holds the variables' values
        # What a destroy removed is not restored by destroying more.
        undo = {"targets": targets} if params["operation"] == "apply" else {}
        return StepResult(outputs={"applied": True}, compensation=undo)

    async def compensate(self, ctx: CompensationContext) -> None:
        targets = list(ctx.compensation.get("targets") or [])
        if ctx.step != "apply" or not targets:
            ctx.logger.info("nothing to undo for %s (no restore_targets)", ctx.step)
            return
        args = ["destroy", "-input=false", "-no-color", "-auto-approve"]
        await _run(ctx.params, [*args, *(f"-target={t}" for t in targets)])
