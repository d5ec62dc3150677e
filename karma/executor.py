"""What an action author writes: an executor class that turns a context into a result."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from karma.meta import ActionMeta


class ActionResult(BaseModel):
    """What a successful `execute` returns."""

    outputs: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class ActionContext:
    """Everything an executor may use for one attempt.

    `params` are validated, with defaults applied, and include secret values: never log them
    whole. `logger` is already bound to the action id.
    """

    action_id: str
    action_type: str
    params: Mapping[str, Any]
    attempt: int
    tags: Mapping[str, str] = field(default_factory=dict)
    entity_id: str = ""
    correlation_id: str = ""
    idempotency_key: str = ""
    logger: logging.LoggerAdapter[logging.Logger] = field(
        default_factory=lambda: logging.LoggerAdapter(logging.getLogger("karma.action"))
    )


class BaseActionExecutor(ABC):
    """Base class of sync executors. One instance serves every attempt on a worker.

    Raise `TransientError` to retry, `PermanentError` to fail at once, `ValidationError`
    for bad input; any other exception counts as transient.
    """

    meta: ClassVar[ActionMeta]

    @abstractmethod
    async def execute(self, ctx: ActionContext) -> ActionResult:
        """Do the work of one attempt."""
