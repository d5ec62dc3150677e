"""The event envelope shared by observations and action transitions (ARCHITECTURE.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Self

from pydantic import BaseModel, Field, field_serializer, field_validator, model_validator

from karma.errors import ErrorInfo
from karma.ids import event_id_for
from karma.lifecycle import EventType

KARMA_SYSTEM = "karma"

# Ids travel as Temporal search attributes (2 KB a value at most) and ClickHouse keys.
MAX_ID_CHARS = 512
MAX_NAME_CHARS = 256
# What ClickHouse's DateTime64 can hold.
EARLIEST_YEAR, LATEST_YEAR = 1900, 2299
MAX_SEQ = 2**32 - 1

Id = Annotated[str, Field(max_length=MAX_ID_CHARS)]
Name = Annotated[str, Field(max_length=MAX_NAME_CHARS)]
Tags = dict[Name, Id]


class EventSource(BaseModel):
    """Who produced an event: a system and free-form namespace labels."""

    system: Name = KARMA_SYSTEM
    ns: Tags = Field(default_factory=dict)


class Envelope(BaseModel):
    """The common envelope. Observations leave the action fields empty."""

    event_id: Id = ""
    ts: datetime
    event_type: Name
    action_id: Id = ""
    seq: int = Field(default=0, ge=0, le=MAX_SEQ)
    entity_id: Id = ""
    correlation_id: Id = ""
    idempotency_key: Id = ""
    source: EventSource = Field(default_factory=EventSource)
    tags: Tags = Field(default_factory=dict)
    attrs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("ts")
    @classmethod
    def _utc_millis(cls, ts: datetime) -> datetime:
        if ts.tzinfo is None:
            raise ValueError("ts must carry a timezone")
        try:
            ts = ts.astimezone(UTC)
        except OverflowError as exc:
            raise ValueError("ts is out of range") from exc
        if not EARLIEST_YEAR <= ts.year <= LATEST_YEAR:
            raise ValueError(f"ts must be between the years {EARLIEST_YEAR} and {LATEST_YEAR}")
        return ts.replace(microsecond=ts.microsecond // 1000 * 1000)

    @field_serializer("ts")
    def _iso_z(self, ts: datetime) -> str:
        return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


class Transition(Envelope):
    """One transition of one action; `event_id == action_id:seq`."""

    event_type: EventType
    action_id: Id = Field(min_length=1)
    seq: int = Field(ge=1, le=MAX_SEQ)

    @model_validator(mode="after")
    def _event_id(self) -> Self:
        expected = event_id_for(self.action_id, self.seq)
        if not self.event_id:
            self.event_id = expected
        elif self.event_id != expected:
            raise ValueError(f"event_id {self.event_id!r} must be {expected!r}")
        return self


class TransitionAttrs(BaseModel):
    """The `attrs` Karma writes on transitions; absent fields are left out."""

    command: str | None = None
    args: dict[str, Any] | None = None
    attempt: int | None = None
    outputs: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    retry_in_ms: int | None = None
    duration_ms: int | None = None
    percent: float | None = None
    message: str | None = None
    external_workflow_id: str | None = None
    timeout_ms: int | None = None
    event_id: str | None = Field(default=None, description="the external event behind this")
    step: str | None = None
    iteration: int | None = None
    outcome: str | None = Field(default=None, description="of a compensated step")
    reason: str | None = None
    decision_request: dict[str, Any] | None = None
    decision: dict[str, Any] | None = None
    undone: list[str] | None = None
    child_action_id: str | None = Field(default=None, description="a pipeline step's action")
    cache_key: str | None = Field(
        default=None, description="a cacheable success: keyed hash of its type and params"
    )
    cached_from: str | None = Field(
        default=None, description="answered from the result cache: the action that ran"
    )

    def as_attrs(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)
