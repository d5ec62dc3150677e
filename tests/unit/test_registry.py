from __future__ import annotations

from typing import Any

import pytest

from karma.errors import DuplicateActionError, UnknownActionError
from karma.executor import ActionContext, ActionResult, BaseActionExecutor
from karma.meta import ActionMeta, ExecutionMode
from karma.registry import ActionRegistry, default_registry, register_action
from karma.saga import (
    CompensationContext,
    StepContext,
    StepResult,
    TransactionalActionExecutor,
)
from karma.stateful import Break, Continue, StatefulActionExecutor

BUILT_INS = {"log", "delay", "http_request", "demo.flaky"}


def _executor(action_type: str) -> type[BaseActionExecutor]:
    class Executor(BaseActionExecutor):
        async def execute(self, ctx: ActionContext) -> ActionResult:
            return ActionResult()

    Executor.meta = ActionMeta(type=action_type, name=action_type)
    return Executor


def test_built_ins_are_discovered_through_entry_points() -> None:
    registry = ActionRegistry.discover()
    assert set(registry.types) >= BUILT_INS
    source = registry.get("log").source
    assert source.startswith("entry point 'log' = karma.actions.log:LogExecutor")
    assert "karma-actions" in source


def test_a_type_claimed_twice_names_both_sources() -> None:
    registry = ActionRegistry.discover()
    impostor = _executor("log")
    with pytest.raises(DuplicateActionError) as caught:
        registry.add(impostor, "plugin acme-ops")
    message = str(caught.value)
    assert "'log' is registered twice" in message
    assert "entry point 'log'" in message
    assert "plugin acme-ops" in message


def test_the_same_class_twice_is_harmless() -> None:
    registry = ActionRegistry()
    cls = _executor("x.one")
    registry.add(cls)
    registry.add(cls)
    assert registry.types == ["x.one"]


def test_unknown_type_lists_the_known_ones() -> None:
    registry = ActionRegistry().extended([_executor("x.one")])
    with pytest.raises(UnknownActionError) as caught:
        registry.executor("x.two")
    assert caught.value.errors[0].field == "action_type"
    assert "unknown action 'x.two' (x.one)" in str(caught.value)


def test_register_action_needs_an_executor_class() -> None:
    with pytest.raises(TypeError, match="BaseActionExecutor subclass"):
        register_action(ActionMeta(type="x", name="x"))(object)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="has no ActionMeta"):
        ActionRegistry().add(BaseActionExecutor)  # type: ignore[type-abstract]


def test_executors_are_created_once() -> None:
    registry = ActionRegistry().extended([_executor("x.one")])
    assert registry.executor("x.one") is registry.executor("x.one")


@pytest.mark.parametrize(
    ("mode", "base"),
    [
        (ExecutionMode.EVENT_DRIVEN, "EventDrivenActionExecutor"),
        (ExecutionMode.TRANSACTIONAL, "TransactionalActionExecutor"),
        (ExecutionMode.INTERACTIVE, "InteractiveActionExecutor"),
        (ExecutionMode.STATEFUL, "StatefulActionExecutor"),
    ],
)
def test_the_executor_class_must_match_the_declared_mode(mode: ExecutionMode, base: str) -> None:
    class Plain(BaseActionExecutor):
        meta = ActionMeta(type="test.kind", name="Kind", mode=mode)

        async def execute(self, ctx: ActionContext) -> ActionResult:
            return ActionResult()

    with pytest.raises(TypeError, match=f"must subclass {base}"):
        ActionRegistry().add(Plain)


def test_a_saga_needs_distinct_steps() -> None:
    class Twice(TransactionalActionExecutor):
        meta = ActionMeta(type="test.twice", name="Twice", mode=ExecutionMode.TRANSACTIONAL)
        steps = ("a", "a")

        async def run_step(self, ctx: StepContext) -> StepResult:
            return StepResult()

        async def compensate(self, ctx: CompensationContext) -> None:
            return None

    with pytest.raises(TypeError, match="distinct step names"):
        ActionRegistry().add(Twice)


def test_built_in_kinds_are_registered_with_their_modes() -> None:
    registry = default_registry()
    modes = {t: registry.meta(t).mode for t in ("demo.provision", "demo.approval", "demo.drain")}
    assert modes == {
        "demo.provision": ExecutionMode.TRANSACTIONAL,
        "demo.approval": ExecutionMode.INTERACTIVE,
        "demo.drain": ExecutionMode.STATEFUL,
    }


def test_a_stateful_action_needs_a_positive_iterations_per_run() -> None:
    class Never(StatefulActionExecutor):
        meta = ActionMeta(type="test.never", name="Never", mode=ExecutionMode.STATEFUL)
        iterations_per_run = 0

        async def execute_with_state(
            self, ctx: ActionContext, state: dict[str, Any]
        ) -> Continue | Break:
            return Break()

    with pytest.raises(TypeError, match="iterations_per_run must be a positive integer"):
        ActionRegistry().add(Never)
