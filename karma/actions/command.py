"""`command`: run a program (an argv list, no shell) on the worker.

The exit code decides: `success_codes` succeed, `transient_codes` are retried, any other
is permanent; a run past `timeout_seconds` has its whole process group stopped and is
transient. `memory_mb` and `cpu_seconds` (and the type's `limits`, the tighter of the two)
are rlimits on the program: going past one fails the attempt as `limit_exceeded`.
stdout and stderr are captured (their last `max_output_bytes` each), with the
values of `env` (secret: it usually carries credentials) masked before they are published.
The child gets PATH, HOME, LANG, LC_ALL, TZ, TMPDIR and USER from the worker, not the rest
of its environment (Karma's keys), unless `inherit_env`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from karma.actions import _process
from karma.errors import PermanentError, TransientError
from karma.executor import ActionContext, ActionResult, BaseActionExecutor
from karma.meta import (
    ActionMeta,
    ExecutorLimits,
    OutputDefinition,
    ParamDefinition,
    ParamType,
    RetryPolicy,
)
from karma.registry import register_action

META = ActionMeta(
    type="command",
    name="Run a command",
    description="Runs a program with arguments (no shell) and judges it by its exit code.",
    category="integration",
    icon="terminal",
    timeout=timedelta(hours=1),
    params=(
        ParamDefinition(
            name="argv", type=ParamType.JSON, required=True, description='["prog", "arg", ...]'
        ),
        ParamDefinition(name="cwd", type=ParamType.STRING, description="the working directory"),
        ParamDefinition(
            name="env", type=ParamType.JSON, secret=True, description="object of variables"
        ),
        ParamDefinition(name="inherit_env", type=ParamType.BOOLEAN, default=False),
        ParamDefinition(
            name="timeout_seconds", type=ParamType.NUMBER, default=300, min=0.1, max=86_400
        ),
        ParamDefinition(name="success_codes", type=ParamType.JSON, default=[0]),
        ParamDefinition(name="transient_codes", type=ParamType.JSON, default=[]),
        ParamDefinition(
            name="max_output_bytes", type=ParamType.NUMBER, default=65_536, min=0, max=1_048_576
        ),
        ParamDefinition(
            name="memory_mb",
            type=ParamType.NUMBER,
            min=1,
            max=16_777_216,
            description="address-space limit of the program (RLIMIT_AS), MiB",
        ),
        ParamDefinition(
            name="cpu_seconds",
            type=ParamType.NUMBER,
            min=1,
            max=604_800,
            description="CPU-time limit of the program (RLIMIT_CPU), seconds",
        ),
    ),
    outputs=(
        OutputDefinition(name="exit_code", type=ParamType.NUMBER),
        OutputDefinition(name="stdout", type=ParamType.STRING),
        OutputDefinition(name="stderr", type=ParamType.STRING),
        OutputDefinition(name="duration_ms", type=ParamType.NUMBER),
        OutputDefinition(name="truncated", type=ParamType.BOOLEAN),
    ),
    retry=RetryPolicy(max_attempts=3),
)


def codes(value: Any, name: str) -> set[int]:
    if not isinstance(value, list) or not all(
        isinstance(c, int) and not isinstance(c, bool) for c in value
    ):
        raise PermanentError(f"{name}: a list of exit codes")
    return set(value)


def judge(finished: _process.Finished, success: set[int], transient: set[int]) -> None:
    """Raise unless the run succeeded.

    Raises:
        karma.errors.TransientError: a timeout or a transient exit code.
        karma.errors.PermanentError: any other exit code.
    """
    if finished.exceeded:
        raise _process.limit_error(finished)
    tail = (finished.stderr or finished.stdout).strip()[-500:]
    if finished.timed_out:
        raise TransientError(f"still running after the timeout: stopped ({tail})")
    if finished.exit_code in success:
        return
    message = f"exit code {finished.exit_code}" + (f": {tail}" if tail else "")
    if finished.exit_code in transient:
        raise TransientError(message)
    raise PermanentError(message)


def limits_for(declared: ExecutorLimits, params: Mapping[str, Any]) -> ExecutorLimits:
    """The type's limits, tightened by the request's `memory_mb` and `cpu_seconds`."""

    def tighter(a: int | None, b: Any) -> int | None:
        given = None if b is None else max(1, int(b))
        return min(x for x in (a, given) if x is not None) if (a or given) else None

    return declared.model_copy(
        update={
            "memory_mb": tighter(declared.memory_mb, params.get("memory_mb")),
            "cpu_seconds": tighter(declared.cpu_seconds, params.get("cpu_seconds")),
        }
    )


@register_action(META)
class CommandExecutor(BaseActionExecutor):
    async def execute(self, ctx: ActionContext) -> ActionResult:
        params = ctx.params
        env = params.get("env") or {}
        if not isinstance(env, dict):
            raise PermanentError("env: an object of variables")
        finished = await _process.run(
            params["argv"] if isinstance(params["argv"], list) else [],
            cwd=params.get("cwd"),
            env=_process.environment(env, inherit=bool(params["inherit_env"])),
            timeout_s=float(params["timeout_seconds"]),
            max_output_bytes=int(params["max_output_bytes"]),
            secrets=[str(v) for v in env.values()],
            limits=limits_for(self.meta.limits, params),
        )
        judge(
            finished,
            codes(params["success_codes"], "success_codes"),
            codes(params["transient_codes"], "transient_codes"),
        )
        return ActionResult(
            outputs={
                "exit_code": finished.exit_code,
                "stdout": finished.stdout,
                "stderr": finished.stderr,
                "duration_ms": finished.duration_ms,
                "truncated": finished.truncated,
            }
        )
