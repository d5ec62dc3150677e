"""Executors that exist only for tests (registered on the in-process test worker)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from datetime import timedelta
from typing import Any, ClassVar

from karma.errors import PermanentError, TransientError
from karma.executor import (
    ActionContext,
    ActionResult,
    AwaitCallback,
    BaseActionExecutor,
    CallbackContext,
    CallbackResult,
    EventDrivenActionExecutor,
    Skip,
)
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
from karma.stateful import Break, Continue, StatefulActionExecutor


@register_action(
    ActionMeta(
        type="test.secret",
        name="Uses a secret",
        params=(
            ParamDefinition(name="user", type=ParamType.STRING, required=True),
            ParamDefinition(name="token", type=ParamType.STRING, required=True, secret=True),
        ),
        outputs=(OutputDefinition(name="token_length", type=ParamType.NUMBER),),
    )
)
class SecretExecutor(BaseActionExecutor):
    async def execute(self, ctx: ActionContext) -> ActionResult:
        ctx.logger.info("calling the service as %s", ctx.params["user"])
        return ActionResult(outputs={"token_length": len(ctx.params["token"])})


@register_action(
    ActionMeta(
        type="test.permanent",
        name="Always fails permanently",
        retry=RetryPolicy(max_attempts=5),
        outputs=(OutputDefinition(name="never"),),
    )
)
class PermanentExecutor(BaseActionExecutor):
    async def execute(self, ctx: ActionContext) -> ActionResult:
        raise PermanentError("the target rejected the change")


@register_action(
    ActionMeta(
        type="test.crash",
        name="Raises an unexpected exception",
        retry=RetryPolicy(max_attempts=2, initial_interval=timedelta(milliseconds=50)),
    )
)
class CrashExecutor(BaseActionExecutor):
    async def execute(self, ctx: ActionContext) -> ActionResult:
        raise RuntimeError("boom")


@register_action(
    ActionMeta(
        type="test.await",
        name="Waits for events about an external id",
        mode=ExecutionMode.EVENT_DRIVEN,
        params=(
            ParamDefinition(name="external_id", type=ParamType.STRING, required=True),
            ParamDefinition(name="wait_seconds", type=ParamType.NUMBER, default=60),
            ParamDefinition(
                name="hand_off_after", type=ParamType.NUMBER, default=0, description="seconds"
            ),
        ),
        outputs=(
            OutputDefinition(name="external"),
            OutputDefinition(name="answer"),
            OutputDefinition(name="last_seen"),
        ),
    )
)
class AwaitExecutor(EventDrivenActionExecutor):
    """`done` completes (attrs.answer), `broken` fails, `step` is progress, else ignored."""

    async def execute(self, ctx: ActionContext) -> AwaitCallback:
        await asyncio.sleep(float(ctx.params["hand_off_after"]))
        external = str(ctx.params["external_id"])
        return AwaitCallback(
            external_workflow_id=external,
            timeout=timedelta(seconds=float(ctx.params["wait_seconds"])),
            outputs={"external": external},
        )

    async def on_callback(self, ctx: CallbackContext) -> CallbackResult:
        attrs = ctx.callback.attrs
        match ctx.callback.event_type:
            case "done":
                return CallbackResult.complete({"answer": attrs.get("answer")})
            case "broken":
                return CallbackResult.fail(
                    str(attrs.get("error", "broken")), {"last_seen": "broken"}
                )
            case "step":
                return CallbackResult.progress(attrs.get("percent"), str(attrs.get("message", "")))
            case "unreadable":
                raise PermanentError("cannot make sense of this event")
            case "huge":  # an answer too large for the history
                return CallbackResult.complete({"answer": "x" * int(attrs.get("bytes", 0))})
            case other:
                return CallbackResult.ignore(f"not interested in {other!r}")


TEST_EXECUTORS: list[type[BaseActionExecutor]] = [
    SecretExecutor,
    PermanentExecutor,
    CrashExecutor,
    AwaitExecutor,
]


@register_action(
    ActionMeta(
        type="test.saga",
        name="Three steps with controllable compensations",
        mode=ExecutionMode.TRANSACTIONAL,
        retry=RetryPolicy(max_attempts=2, initial_interval=timedelta(milliseconds=50)),
        params=(
            ParamDefinition(name="fail_at", type=ParamType.STRING, default=""),
            ParamDefinition(
                name="flaky_compensation", type=ParamType.NUMBER, default=0, description="fails"
            ),
            ParamDefinition(name="broken_compensation", type=ParamType.STRING, default=""),
            ParamDefinition(name="step_seconds", type=ParamType.NUMBER, default=0),
        ),
        outputs=(OutputDefinition(name="a"), OutputDefinition(name="b")),
    )
)
class SagaExecutor(TransactionalActionExecutor):
    """Steps a, b, c; `flaky_compensation` makes each compensation fail that many times
    first; `broken_compensation` names a step whose compensation always fails."""

    steps = ("a", "b", "c")
    compensation_retry = RetryPolicy(
        max_attempts=3, initial_interval=timedelta(milliseconds=50), backoff_coefficient=1.0
    )
    calls: ClassVar[list[tuple[str, str, dict[str, Any]]]] = []

    async def run_step(self, ctx: StepContext) -> StepResult:
        self.calls.append((ctx.action_id, f"run {ctx.step}", dict(ctx.previous)))
        await asyncio.sleep(float(ctx.params["step_seconds"]))
        if ctx.params["fail_at"] == ctx.step:
            raise TransientError(f"step {ctx.step} broke")
        return StepResult(
            outputs={ctx.step: f"{ctx.step}-out"}, compensation={"undo": f"{ctx.step}-token"}
        )

    async def compensate(self, ctx: CompensationContext) -> None:
        self.calls.append((ctx.action_id, f"compensate {ctx.step}", dict(ctx.compensation)))
        if ctx.params["broken_compensation"] == ctx.step:
            raise TransientError(f"cannot undo {ctx.step}")
        if ctx.attempt <= int(ctx.params["flaky_compensation"]):
            raise TransientError(f"undo {ctx.step} failed on attempt {ctx.attempt}")


@register_action(
    ActionMeta(
        type="test.maybe",
        name="Skips when told to",
        params=(ParamDefinition(name="needed", type=ParamType.BOOLEAN, default=False),),
        outputs=(OutputDefinition(name="done"),),
    )
)
class MaybeExecutor(BaseActionExecutor):
    async def execute(self, ctx: ActionContext) -> ActionResult | Skip:
        if not ctx.params["needed"]:
            return Skip(reason="already in the desired state", outputs={"done": False})
        return ActionResult(outputs={"done": True})


TEST_EXECUTORS += [SagaExecutor, MaybeExecutor]


@register_action(
    ActionMeta(
        type="test.counter",
        name="Counts to a target, one per iteration",
        mode=ExecutionMode.STATEFUL,
        params=(
            ParamDefinition(name="target", type=ParamType.NUMBER, default=5),
            ParamDefinition(name="pause", type=ParamType.NUMBER, default=0.3),
        ),
        outputs=(OutputDefinition(name="count"), OutputDefinition(name="migrated_from")),
    )
)
class CounterExecutor(StatefulActionExecutor):
    """Version 1 keeps `{"n": ...}`; version 2 (a test switches it mid-run) keeps
    `{"count": ..., "migrated_from": 1}`."""

    state_version = 1
    iterations_per_run = 3

    def initial_state(self, ctx: ActionContext) -> dict[str, Any]:
        return {"n": 0} if self.state_version == 1 else {"count": 0}

    def migrate_state(self, state: dict[str, Any], from_version: int) -> dict[str, Any]:
        assert from_version == 1
        return {"count": state["n"], "migrated_from": 1}

    async def execute_with_state(
        self, ctx: ActionContext, state: dict[str, Any]
    ) -> Continue | Break:
        key = "n" if self.state_version == 1 else "count"
        count = int(state[key]) + 1
        if count >= int(ctx.params["target"]):
            return Break(outputs={"count": count, "migrated_from": state.get("migrated_from")})
        return Continue(
            state={**state, key: count},
            progress=100 * count / int(ctx.params["target"]),
            delay=timedelta(seconds=float(ctx.params["pause"])),
        )


TEST_EXECUTORS.append(CounterExecutor)


@register_action(
    ActionMeta(
        type="test.growing",
        name="A state that grows by a chunk of random hex per iteration",
        mode=ExecutionMode.STATEFUL,
        params=(
            ParamDefinition(name="chunk", type=ParamType.NUMBER, default=8192),
            ParamDefinition(name="until", type=ParamType.NUMBER, default=0, description="0: ever"),
        ),
        outputs=(OutputDefinition(name="bytes"), OutputDefinition(name="iterations")),
    )
)
class GrowingExecutor(StatefulActionExecutor):
    """Checks every iteration that the state it gets is the one it wrote (a digest kept
    beside the blob), so a state mangled on its way fails the action."""

    async def execute_with_state(
        self, ctx: ActionContext, state: dict[str, Any]
    ) -> Continue | Break:
        blob = str(state.get("blob", ""))
        if hashlib.sha256(blob.encode()).hexdigest() != state.get("digest", _EMPTY_DIGEST):
            raise PermanentError("the state came back different from the one written")
        blob += os.urandom(int(ctx.params["chunk"]) // 2).hex()
        iterations = int(state.get("iterations", 0)) + 1
        until = int(ctx.params["until"])
        if until and len(blob) >= until:
            return Break(outputs={"bytes": len(blob), "iterations": iterations})
        digest = hashlib.sha256(blob.encode()).hexdigest()
        return Continue(
            state={"blob": blob, "digest": digest, "iterations": iterations},
            message=f"{len(blob)} bytes",
        )


_EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()
TEST_EXECUTORS.append(GrowingExecutor)


@register_action(
    ActionMeta(
        type="test.cached",
        name="Looks something up; its results may be reused for a while",
        idempotent=True,
        cache_ttl=timedelta(minutes=10),
        params=(
            ParamDefinition(name="host", type=ParamType.STRING, required=True),
            ParamDefinition(name="token", type=ParamType.STRING, secret=True),
            ParamDefinition(name="fail", type=ParamType.BOOLEAN, default=False),
        ),
        outputs=(OutputDefinition(name="host"), OutputDefinition(name="run")),
        retry=RetryPolicy(max_attempts=1),
    )
)
class CachedExecutor(BaseActionExecutor):
    """Counts its calls per host, so a test sees which requests reached it."""

    calls: ClassVar[dict[str, int]] = {}

    async def execute(self, ctx: ActionContext) -> ActionResult:
        host = str(ctx.params["host"])
        self.calls[host] = self.calls.get(host, 0) + 1
        if ctx.params["fail"]:
            raise PermanentError(f"{host} is down")
        return ActionResult(outputs={"host": host, "run": self.calls[host]})


TEST_EXECUTORS.append(CachedExecutor)


@register_action(
    ActionMeta(
        type="test.refs",
        name="Scales a model on a cluster (reference and template parameters)",
        params=(
            ParamDefinition(name="cluster", type=ParamType.REF, ref_kind="cluster", required=True),
            ParamDefinition(name="model", type=ParamType.REF, ref_kind="model"),
            ParamDefinition(name="token", type=ParamType.STRING, secret=True),
            ParamDefinition(
                name="message",
                type=ParamType.TEMPLATE,
                default="scaling {{ params.model | default('nothing') }} on {{ params.cluster }}",
            ),
        ),
        outputs=(OutputDefinition(name="cluster"), OutputDefinition(name="message")),
    )
)
class RefsExecutor(BaseActionExecutor):
    async def execute(self, ctx: ActionContext) -> ActionResult:
        return ActionResult(
            outputs={"cluster": ctx.params["cluster"], "message": ctx.params["message"]}
        )


TEST_EXECUTORS.append(RefsExecutor)


@register_action(
    ActionMeta(
        type="test.placed",
        name="Iterates on a cluster named by reference (continues as new every 2)",
        mode=ExecutionMode.STATEFUL,
        params=(
            ParamDefinition(name="cluster", type=ParamType.REF, ref_kind="cluster", required=True),
            ParamDefinition(name="note", type=ParamType.TEMPLATE, default="{{ '{{' }} raw"),
            ParamDefinition(name="iterations", type=ParamType.NUMBER, default=5),
        ),
        outputs=(OutputDefinition(name="clusters"), OutputDefinition(name="notes")),
    )
)
class PlacedExecutor(StatefulActionExecutor):
    """Records the cluster and note each iteration got: a continued run must get the ones
    the first run prepared."""

    iterations_per_run = 2

    async def execute_with_state(
        self, ctx: ActionContext, state: dict[str, Any]
    ) -> Continue | Break:
        clusters = [*state.get("clusters", []), ctx.params["cluster"]]
        notes = sorted({*state.get("notes", []), ctx.params["note"]})
        if len(clusters) >= int(ctx.params["iterations"]):
            return Break(outputs={"clusters": sorted(set(clusters)), "notes": notes})
        return Continue(state={"clusters": clusters, "notes": notes}, delay=timedelta(seconds=0.2))


TEST_EXECUTORS.append(PlacedExecutor)


@register_action(
    ActionMeta(
        type="test.big",
        name="Returns outputs of a given size",
        params=(ParamDefinition(name="output_bytes", type=ParamType.NUMBER, default=10),),
        outputs=(OutputDefinition(name="blob"),),
    )
)
class BigOutputExecutor(BaseActionExecutor):
    async def execute(self, ctx: ActionContext) -> ActionResult:
        return ActionResult(outputs={"blob": "b" * int(ctx.params["output_bytes"])})


TEST_EXECUTORS.append(BigOutputExecutor)


@register_action(
    ActionMeta(
        type="test.every_type",
        name="Takes a parameter of every type",
        params=(
            ParamDefinition(name="text", type=ParamType.STRING, required=True),
            ParamDefinition(name="count", type=ParamType.NUMBER, min=1, max=10),
            ParamDefinition(name="flag", type=ParamType.BOOLEAN),
            ParamDefinition(name="colour", type=ParamType.SELECT, options=("red", "green")),
            ParamDefinition(name="sizes", type=ParamType.MULTISELECT, options=("s", "m", "l")),
            ParamDefinition(name="doc", type=ParamType.JSON),
        ),
    )
)
class EveryTypeExecutor(BaseActionExecutor):
    async def execute(self, ctx: ActionContext) -> ActionResult:
        return ActionResult()


TEST_EXECUTORS.append(EveryTypeExecutor)
