"""What an action author writes: an executor class that turns a context into a result.

Sync executors return an `ActionResult` (or `Skip` when there is nothing to do).
Event-driven executors start work elsewhere and return `AwaitCallback`; Karma then hands every
external event to their `on_callback`, which answers with an `CallbackResult` (complete, update
progress, or ignore). Transactional, interactive and stateful executors are in
`karma.saga`, `karma.interactive` and `karma.stateful`.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Self

from pydantic import BaseModel, Field

from karma.breakers import BREAKERS
from karma.envelope import Envelope
from karma.errors import PermanentError
from karma.http_calls import body_of, check_status, send
from karma.meta import ActionMeta, ExecutionMode

if TYPE_CHECKING:  # interactive.py builds on this module
    from karma.credentials import CredentialManager
    from karma.interactive import Decision

ACTION_ID_HEADER = "X-Karma-Action-Id"
CALLBACK_TOPIC_HEADER = "X-Karma-Callback-Topic"


class ActionResult(BaseModel):
    """What a successful `execute` returns."""

    outputs: dict[str, Any] = Field(default_factory=dict)


class Skip(BaseModel):
    """Returned by `execute` when the action is unnecessary: it ends SKIPPED."""

    reason: str = Field(min_length=1)
    outputs: dict[str, Any] = Field(default_factory=dict)


class AwaitCallback(BaseModel):
    """Returned by an event-driven `execute`: the work goes on elsewhere; wait for events
    about `external_workflow_id` for at most `timeout`."""

    external_workflow_id: str = Field(min_length=1)
    timeout: timedelta
    outputs: dict[str, Any] = Field(default_factory=dict, description="known so far")


class CallbackDecision(StrEnum):
    COMPLETE = "complete"
    UPDATE_PROGRESS = "update_progress"
    IGNORE = "ignore"


class CallbackResult(BaseModel):
    """What `on_callback` decided about one external event."""

    decision: CallbackDecision
    succeeded: bool = True
    outputs: dict[str, Any] = Field(default_factory=dict)
    error: str = ""
    percent: float | None = Field(default=None, ge=0, le=100)
    message: str = ""

    @classmethod
    def complete(cls, outputs: Mapping[str, Any] | None = None) -> Self:
        return cls(decision=CallbackDecision.COMPLETE, outputs=dict(outputs or {}))

    @classmethod
    def fail(cls, error: str, outputs: Mapping[str, Any] | None = None) -> Self:
        return cls(
            decision=CallbackDecision.COMPLETE,
            succeeded=False,
            error=error,
            outputs=dict(outputs or {}),
        )

    @classmethod
    def progress(cls, percent: float | None, message: str = "") -> Self:
        return cls(decision=CallbackDecision.UPDATE_PROGRESS, percent=percent, message=message)

    @classmethod
    def ignore(cls, message: str = "") -> Self:
        return cls(decision=CallbackDecision.IGNORE, message=message)


async def credential_from(manager: CredentialManager | None, credential_id: str, scope: str) -> str:
    """What the contexts' `credential()` answer (see ActionContext.credential)."""
    if manager is None:
        raise PermanentError(
            f"credential {credential_id!r} (scope {scope!r}): this worker has no credential manager"
        )
    return await manager.get(credential_id, scope)


def _default_logger() -> logging.LoggerAdapter[logging.Logger]:
    return logging.LoggerAdapter(logging.getLogger("karma.action"))


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
    callback_topic: str = ""
    services: Mapping[str, str] = field(default_factory=dict)
    decision: Decision | None = None  # interactive actions: the approval being carried out
    # The resources its ActionMeta.required_services names, healthy (see karma.resources).
    resources: Mapping[str, Any] = field(default_factory=dict)
    credentials: CredentialManager | None = None  # the worker's (see karma.credentials)
    logger: logging.LoggerAdapter[logging.Logger] = field(default_factory=_default_logger)

    async def credential(self, credential_id: str, scope: str = "*") -> str:
        """A credential's secret (an OAuth 2.0 client's: a current access token), looked up
        by exactly this id and scope. Use it, never log it or return it in outputs.

        Raises:
            karma.errors.PermanentError: no such credential, or no credential manager.
            karma.errors.TransientError: its token endpoint is unreachable or failing.
        """
        return await credential_from(self.credentials, credential_id, scope)

    def resource(self, name: str) -> Any:
        """A resource the action type requires (`ActionMeta.required_services`).

        Raises:
            karma.errors.PermanentError: the type does not require it.
        """
        if name not in self.resources:
            raise PermanentError(f"{name!r} is not in this action type's required_services")
        return self.resources[name]

    async def invoke_service(
        self,
        service: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        query: Mapping[str, Any] | None = None,
        timeout: float = 30.0,
    ) -> Any:
        """Call a configured service (`KARMA_SERVICES__<NAME>`) and return its JSON body.

        The action id and the callback topic always travel along (`X-Karma-Action-Id`,
        `X-Karma-Callback-Topic`) so the service's events can find their way back.
        Failures are classified like `http_request`'s.
        """
        base = self.services.get(service)
        if not base:
            raise PermanentError(
                f"service {service!r} has no URL: set KARMA_SERVICES__{service.upper()}"
            )
        url = base.rstrip("/") + "/" + path.lstrip("/")
        async with BREAKERS.guard(url):  # a failing service is left alone for a while
            response = await send(
                method,
                url,
                client=self.resources.get(service),  # its pooled client, when required
                timeout=timeout,
                headers={
                    ACTION_ID_HEADER: self.action_id,
                    CALLBACK_TOPIC_HEADER: self.callback_topic,
                },
                json_body=json,
                query=query,
            )
            check_status(response)
        return body_of(response)


@dataclass(frozen=True)
class CallbackContext:
    """One callback for an action that waits (`AwaitCallback`)."""

    action_id: str
    action_type: str
    params: Mapping[str, Any]
    external_workflow_id: str
    callback: Envelope
    outputs: Mapping[str, Any]
    logger: logging.LoggerAdapter[logging.Logger] = field(default_factory=_default_logger)


class BaseActionExecutor(ABC):
    """Base class of executors. One instance serves every attempt on a worker.

    Raise `TransientError` to retry, `PermanentError` to fail at once, `ValidationError`
    for bad input; any other exception counts as transient.
    """

    meta: ClassVar[ActionMeta]

    def __init_subclass__(cls, *, kind: ExecutionMode | None = None, **kwargs: Any) -> None:
        """`class StreamingActionExecutor(BaseActionExecutor, kind=...)` makes a class the
        base of a kind of action: every executor of that mode must subclass it."""
        super().__init_subclass__(**kwargs)
        if kind is not None:
            KIND_BASES[kind] = cls

    @classmethod
    def check_kind(cls, source: str) -> None:
        """Raise TypeError if the class cannot run as its kind (checked at registration);
        every executor can run as a sync one."""
        return

    @abstractmethod
    async def execute(self, ctx: ActionContext) -> ActionResult | AwaitCallback | Skip:
        """Do the work of one attempt (sync executors return an ActionResult or Skip)."""


# The base class of each kind of action a worker can run (sync: every executor).
KIND_BASES: dict[ExecutionMode, type[BaseActionExecutor]] = {}
KIND_BASES[ExecutionMode.SYNC] = BaseActionExecutor  # type: ignore[type-abstract]


class EventDrivenActionExecutor(BaseActionExecutor, kind=ExecutionMode.EVENT_DRIVEN):
    """Starts work elsewhere (`execute` returns AwaitCallback) and judges the events about it."""

    @abstractmethod
    async def on_callback(self, ctx: CallbackContext) -> CallbackResult:
        """Decide what one external event means: complete, progress or ignore."""
