"""Karma: durable, observable operational actions on Temporal.

What an action author needs is importable from here; the client is `karma.client`.
This package stays pure (no I/O at import), so workflow code may import it.
"""

from karma.errors import PermanentError, TransientError, ValidationError
from karma.executor import ActionContext, ActionResult, BaseActionExecutor
from karma.lifecycle import ActionState, EventType
from karma.meta import (
    ActionMeta,
    ExecutionMode,
    OutputDefinition,
    ParamDefinition,
    ParamType,
    RetryPolicy,
)
from karma.registry import register_action

__all__ = [
    "ActionContext",
    "ActionMeta",
    "ActionResult",
    "ActionState",
    "BaseActionExecutor",
    "EventType",
    "ExecutionMode",
    "OutputDefinition",
    "ParamDefinition",
    "ParamType",
    "PermanentError",
    "RetryPolicy",
    "TransientError",
    "ValidationError",
    "register_action",
]
