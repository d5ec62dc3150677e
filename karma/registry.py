"""The action registry: which executor runs which action type.

Actions are found through the `karma.actions` entry-point group (the built-ins too), so
adding an action is one file plus one entry point. `@register_action(META)` marks a class
as an executor of META; classes decorated in this process are registered as well.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points

from karma.errors import DuplicateActionError, UnknownActionError
from karma.executor import KIND_BASES, BaseActionExecutor
from karma.meta import ActionMeta

ENTRY_POINT_GROUP = "karma.actions"

_decorated: list[type[BaseActionExecutor]] = []


def register_action(
    meta: ActionMeta,
) -> Callable[[type[BaseActionExecutor]], type[BaseActionExecutor]]:
    """Class decorator binding an executor class to its metadata."""

    def decorate(cls: type[BaseActionExecutor]) -> type[BaseActionExecutor]:
        if not (isinstance(cls, type) and issubclass(cls, BaseActionExecutor)):
            raise TypeError(f"@register_action needs a BaseActionExecutor subclass, got {cls!r}")
        cls.meta = meta
        _decorated.append(cls)
        return cls

    return decorate


@dataclass(frozen=True)
class RegisteredAction:
    meta: ActionMeta
    executor_class: type[BaseActionExecutor]
    source: str


class ActionRegistry:
    """Action types and their executors; executors are created once, on first use."""

    def __init__(self) -> None:
        self._actions: dict[str, RegisteredAction] = {}
        self._executors: dict[str, BaseActionExecutor] = {}

    def add(self, executor_class: type[BaseActionExecutor], source: str = "") -> None:
        """Register a class; the same class twice is harmless, two classes for a type are not."""
        meta = getattr(executor_class, "meta", None)
        if not isinstance(meta, ActionMeta):
            raise TypeError(f"{_qualname(executor_class)} has no ActionMeta (use @register_action)")
        source = source or _qualname(executor_class)
        _check_kind(meta, executor_class, source)
        existing = self._actions.get(meta.type)
        if existing is not None:
            if existing.executor_class is executor_class:
                return
            raise DuplicateActionError(
                f"action type {meta.type!r} is registered twice: by {existing.source} "
                f"and by {source}"
            )
        self._actions[meta.type] = RegisteredAction(meta, executor_class, source)

    def get(self, action_type: str) -> RegisteredAction:
        try:
            return self._actions[action_type]
        except KeyError:
            raise UnknownActionError(action_type, list(self._actions)) from None

    def meta(self, action_type: str) -> ActionMeta:
        return self.get(action_type).meta

    def executor(self, action_type: str) -> BaseActionExecutor:
        if action_type not in self._executors:
            self._executors[action_type] = self.get(action_type).executor_class()
        return self._executors[action_type]

    def __contains__(self, action_type: object) -> bool:
        return action_type in self._actions

    def __iter__(self) -> Iterator[RegisteredAction]:
        return iter(sorted(self._actions.values(), key=lambda a: a.meta.type))

    @property
    def types(self) -> list[str]:
        return sorted(self._actions)

    def extended(self, classes: Iterable[type[BaseActionExecutor]]) -> ActionRegistry:
        """A copy with more executor classes (tests and embedding applications use this)."""
        copy = ActionRegistry()
        for action in self._actions.values():
            copy.add(action.executor_class, action.source)
        for cls in classes:
            copy.add(cls)
        return copy

    @classmethod
    def discover(cls, group: str = ENTRY_POINT_GROUP) -> ActionRegistry:
        """Load every entry point of `group`, then the classes decorated in this process."""
        registry = cls()
        for ep in entry_points(group=group):
            loaded = ep.load()
            dist = ep.dist.name if ep.dist is not None else "unknown distribution"
            registry.add(loaded, f"entry point {ep.name!r} = {ep.value} ({dist})")
        for decorated in _decorated:
            registry.add(decorated)
        return registry


@functools.cache
def default_registry() -> ActionRegistry:
    """The process-wide registry, discovered on first use."""
    return ActionRegistry.discover()


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _check_kind(meta: ActionMeta, executor_class: type[BaseActionExecutor], source: str) -> None:
    """The executor class must subclass the base of the kind its metadata declares."""
    base = KIND_BASES.get(meta.mode)
    if base is not None and not issubclass(executor_class, base):
        raise TypeError(
            f"{source}: action {meta.type!r} is {meta.mode.value}, so its executor must "
            f"subclass {base.__name__}"
        )
    executor_class.check_kind(source)
