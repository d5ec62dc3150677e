"""Karma: durable, observable operational actions on Temporal.

What an action author needs is importable from here; the client is `karma.client`.
This package stays pure (no I/O at import), so workflow code may import it.
"""

from karma.errors import PermanentError, TransientError, ValidationError
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
from karma.interactive import AwaitDecision, InteractiveActionExecutor, TimeoutPolicy
from karma.lifecycle import ActionState, EventType
from karma.meta import (
    ActionMeta,
    ExecutionMode,
    ExecutorLimits,
    OutputDefinition,
    ParamDefinition,
    ParamType,
    RetryPolicy,
)
from karma.registry import register_action
from karma.saga import CompensationContext, StepContext, StepResult, TransactionalActionExecutor
from karma.stateful import Break, Continue, StatefulActionExecutor

__all__ = [
    "ActionContext",
    "ActionMeta",
    "ActionResult",
    "ActionState",
    "AwaitCallback",
    "AwaitDecision",
    "BaseActionExecutor",
    "Break",
    "CallbackContext",
    "CallbackResult",
    "CompensationContext",
    "Continue",
    "EventDrivenActionExecutor",
    "EventType",
    "ExecutionMode",
    "ExecutorLimits",
    "InteractiveActionExecutor",
    "OutputDefinition",
    "ParamDefinition",
    "ParamType",
    "PermanentError",
    "RetryPolicy",
    "Skip",
    "StatefulActionExecutor",
    "StepContext",
    "StepResult",
    "TimeoutPolicy",
    "TransactionalActionExecutor",
    "TransientError",
    "ValidationError",
    "register_action",
]
