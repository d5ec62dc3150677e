"""What a producer asks for: one action of one type with its parameters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field
from pydantic import ValidationError as PydanticValidationError

from karma.envelope import KARMA_SYSTEM, EventSource, Id, Name, Tags
from karma.errors import FieldError, ValidationError, field_errors
from karma.ids import action_id_for_key, new_action_id
from karma.run_state import RunState

# 2: one activity per executor method, replay-stable transition times, callbacks.
# 3: only transitions of committed workflow tasks are published.
# 4: an emit is never cancelled half way (a cancellation waits for Kafka's answer).
CONTRACT = 4


RESERVED_TAGS = frozenset({"action", "priority", "tenant", "trace_id"})  # stamped from the request


def reserved_tag_errors(
    tags: Mapping[str, str] | None, reserved: frozenset[str] = RESERVED_TAGS
) -> list[FieldError]:
    """An error for each tag Karma sets itself (`reserved`)."""
    reasons = {
        "action": "reserved: Karma sets it (the action type)",
        "trace_id": "reserved: Karma sets it (the trace the request started)",
    }
    return [
        FieldError(
            field=f"tags.{name}",
            reason=reasons.get(name, f"reserved: Karma sets it (use `{name}`)")
            if name in RESERVED_TAGS
            else "reserved: Karma sets it",
        )
        for name in sorted(reserved & set(tags or {}))
    ]


class ActionRequest(BaseModel):
    """The input of an ActionWorkflow.

    `action_id` is derived from `idempotency_key` when one is given (see `ActionRequest.new`).
    """

    action_id: Id = Field(min_length=1)
    action_type: Name = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: Id = ""
    entity_id: Id = ""
    correlation_id: Id = ""
    tenant: Name = ""
    priority: Name = "normal"
    tags: Tags = Field(default_factory=dict)
    source: EventSource = Field(default_factory=EventSource)
    resume: RunState | None = Field(
        default=None, description="set by continue-as-new only: where the action stands"
    )
    trace_id: str = Field(
        default="",
        pattern="^([0-9a-f]{32})?$",
        description="the OpenTelemetry trace the request started (stamped on every transition "
        "as the `trace_id` tag); empty when tracing is off",
    )
    max_attempts: int | None = Field(
        default=None, ge=1, le=100, description="overrides the action type's retry budget"
    )
    params_prepared: bool = Field(
        default=False,
        description="set by continue-as-new only: `params` are the ones the first run "
        "prepared (references resolved, templates rendered), not to be prepared again",
    )
    template_context: dict[str, Any] | None = Field(
        default=None,
        description="more for TEMPLATE params to read: a pipeline's step gets `steps` "
        "(the outputs of the steps it needs)",
    )
    contract: int = Field(
        default=1,
        description="the version of the workflow contract the request was made for: 1 for "
        "requests made before it was recorded (their runs keep the commands they were "
        "recorded with), CONTRACT for new ones",
    )

    @classmethod
    def new(
        cls,
        action_type: str,
        params: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str = "",
        entity_id: str = "",
        correlation_id: str = "",
        tenant: str = "",
        priority: str = "normal",
        tags: Mapping[str, str] | None = None,
        source: EventSource | None = None,
    ) -> ActionRequest:
        """A request with its action id derived from the tenant and idempotency key (or
        random).

        Raises:
            karma.errors.ValidationError: an id or name too long, a reserved tag, a NUL in
                the tenant or idempotency key, naming the field.
        """
        errors = reserved_tag_errors(tags)
        errors += [
            FieldError(field=name, reason="must not contain NUL")
            for name, value in (("tenant", tenant), ("idempotency_key", idempotency_key))
            if "\x00" in value
        ]
        if errors:
            raise ValidationError(sorted(errors, key=lambda e: e.field))
        action_id = (
            action_id_for_key(idempotency_key, tenant) if idempotency_key else new_action_id()
        )
        try:
            return cls(
                contract=CONTRACT,
                action_id=action_id,
                action_type=action_type,
                params=dict(params or {}),
                idempotency_key=idempotency_key,
                entity_id=entity_id,
                correlation_id=correlation_id,
                tenant=tenant,
                priority=priority,
                tags=dict(tags or {}),
                source=source or EventSource(),
            )
        except PydanticValidationError as exc:
            raise ValidationError(field_errors(exc)) from exc

    @property
    def event_source(self) -> EventSource:
        """Karma is the source of every transition (that is how the ingress tells them from
        requests); a requester from outside is named in `ns.requested_by`."""
        ns = dict(self.source.ns)
        if self.source.system != KARMA_SYSTEM:
            ns["requested_by"] = self.source.system
        return EventSource(ns=ns)

    @property
    def event_tags(self) -> dict[str, str]:
        """Tags stamped on every transition: the request's own plus action, priority, tenant."""
        tags = dict(self.tags)
        tags.update(action=self.action_type, priority=self.priority)
        if self.tenant:
            tags["tenant"] = self.tenant
        if self.trace_id:
            tags["trace_id"] = self.trace_id
        return tags
