"""Reading what other systems publish to Karma: action requests and callback events.

Pure functions from a Kafka message to a request or an event; anything unusable raises a
`ValidationError` whose field errors become the dead letter's reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from pydantic import ValidationError as PydanticValidationError

from bridge.decode import decode_envelope, decode_foreign_envelope
from karma import names
from karma.envelope import MAX_ID_CHARS, Envelope
from karma.errors import FieldError, ValidationError, field_errors
from karma.lifecycle import EventType
from karma.request import ActionRequest
from karma.settings import LimitsSettings

# Set by `karma dlq replay`: where the message first arrived, so a replayed request keeps
# the action id it would have had (its idempotency key derives from the first position).
ORIGIN_HEADER = "karma.origin"
# A request may wait in Kafka at most this long (ten years): beyond it `ts + ttl` overflows.
MAX_TTL_SECONDS = 10 * 365 * 24 * 3600


def marked_as_transition(headers: Iterable[tuple[str, bytes | None]]) -> bool:
    """Whether a record's headers mark it as one of Karma's transitions."""
    return any(key == names.TRANSITION_HEADER and value == b"1" for key, value in headers)


@dataclass(frozen=True)
class Inbound:
    """One consumed message: its bytes and where it came from."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    headers: dict[str, bytes]
    timestamp_ms: int = 0

    @classmethod
    def from_record(cls, record: Any) -> Inbound:
        """From an aiokafka ConsumerRecord."""
        return cls(
            record.topic,
            record.partition,
            record.offset,
            record.value,
            {k: bytes(v or b"") for k, v in record.headers or ()},
            record.timestamp or 0,
        )

    @property
    def position(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)

    @property
    def is_transition(self) -> bool:
        """One of Karma's own transitions (told by its header, without parsing it)."""
        return marked_as_transition(self.headers.items())

    @property
    def origin(self) -> str:
        """`kafka:topic:partition:offset` of the message's first arrival (as a replay says,
        when its header looks like one)."""
        replayed = self.headers.get(ORIGIN_HEADER, b"").decode("utf-8", "replace")
        if replayed.startswith("kafka:") and len(replayed) <= MAX_ID_CHARS:
            return replayed
        return f"kafka:{self.topic}:{self.partition}:{self.offset}"


class RequestAttrs(BaseModel):
    """The `attrs` of a request on `actions.requested`."""

    command: str = Field(min_length=1, description="the action type")
    args: dict[str, Any] = Field(default_factory=dict, description="the action's parameters")
    ttl_sec: float | None = Field(
        default=None,
        gt=0,
        le=MAX_TTL_SECONDS,
        allow_inf_nan=False,
        description="a request older than this is not started",
    )


def decode_request(
    message: Inbound, now: datetime, limits: LimitsSettings | None = None
) -> ActionRequest | None:
    """The request in a message, or None for Karma's own mirrored transitions.

    Without an idempotency key the message's origin is the key, so a message read twice
    (after a crash before the commit) is still one action.
    """
    if message.is_transition:
        return None
    envelope = decode_foreign_envelope(message.value, limits)
    if envelope.event_type != EventType.REQUESTED.value:
        reason = f"must be {EventType.REQUESTED.value!r} on this topic, got {envelope.event_type!r}"
        raise ValidationError([FieldError(field="event_type", reason=reason)])
    try:
        attrs = RequestAttrs.model_validate(envelope.attrs)
    except PydanticValidationError as exc:
        raise ValidationError(field_errors(exc, prefix="attrs.")) from exc
    if attrs.ttl_sec is not None and envelope.ts + timedelta(seconds=attrs.ttl_sec) < now:
        reason = f"expired: requested at {envelope.ts.isoformat()} with a ttl of {attrs.ttl_sec:g}s"
        raise ValidationError([FieldError(field="attrs.ttl_sec", reason=reason)])
    tags = dict(envelope.tags)
    request = ActionRequest.new(
        attrs.command,
        attrs.args,
        idempotency_key=envelope.idempotency_key or message.origin,
        entity_id=envelope.entity_id,
        correlation_id=envelope.correlation_id,
        tenant=tags.pop("tenant", ""),
        priority=tags.pop("priority", "normal"),
        # Stamped by Karma: dropped from an envelope copied from a transition.
        tags={k: v for k, v in tags.items() if k not in ("action", "trace_id")},
        source=envelope.source,
    )
    if envelope.action_id:
        request = request.model_copy(update={"action_id": envelope.action_id})
    return request


@dataclass(frozen=True)
class Callback:
    """An external event and the action it is about (by id, or by the external id only)."""

    event: Envelope
    action_id: str
    external_workflow_id: str

    @property
    def target(self) -> str:
        return self.action_id or f"external id {self.external_workflow_id!r}"


def decode_callback(message: Inbound, limits: LimitsSettings | None = None) -> Callback:
    """The event in a message on the callback topic; it must name its action or the
    external workflow id the action waits on (`attrs.external_workflow_id`)."""
    envelope = decode_envelope(message.value, limits)
    external = envelope.attrs.get("external_workflow_id", "")
    if not isinstance(external, str):
        reason = f"must be a string, got {type(external).__name__}"
        raise ValidationError([FieldError(field="attrs.external_workflow_id", reason=reason)])
    if len(external) > MAX_ID_CHARS:
        reason = f"must be at most {MAX_ID_CHARS} characters, got {len(external):,}"
        raise ValidationError([FieldError(field="attrs.external_workflow_id", reason=reason)])
    if not envelope.action_id and not external:
        reason = "the event names neither its action nor attrs.external_workflow_id"
        raise ValidationError([FieldError(field="action_id", reason=reason)])
    if not envelope.event_id:
        # Redelivered copies of this message dedupe on its origin in the workflow.
        envelope = envelope.model_copy(update={"event_id": message.origin})
    return Callback(envelope, envelope.action_id, external)
