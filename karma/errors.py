"""Typed errors. Each class says whether it is worth retrying (`retryable`, aiokafka style).

Executors raise `TransientError` (retried, optionally after `retry_after` seconds),
`PermanentError` (fails the action at once) or `ValidationError` (bad input, never retried).
Any other exception raised by an executor counts as transient.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

from pydantic import BaseModel, Field
from pydantic import ValidationError as PydanticValidationError


class ErrorType(StrEnum):
    """The error taxonomy recorded with failed attempts and terminal events."""

    VALIDATION = "validation"
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TIMEOUT = "timeout"
    EXTERNAL = "external"
    REJECTED = "rejected"
    COMPENSATION_FAILED = "compensation_failed"
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    CANCELLED = "cancelled"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    LIMIT_EXCEEDED = "limit_exceeded"
    INTERNAL = "internal"


class FieldError(BaseModel):
    """One problem with one field of a request."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class KarmaError(Exception):
    """Base of every error Karma raises on purpose."""

    retryable: ClassVar[bool] = False
    error_type: ClassVar[ErrorType] = ErrorType.INTERNAL


class ValidationError(KarmaError):
    """A request Karma cannot run as given (unknown type, bad parameters). Never retried."""

    error_type = ErrorType.VALIDATION

    def __init__(self, errors: list[FieldError]) -> None:
        if not errors:
            raise ValueError("a ValidationError needs at least one field error")
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


class UnknownActionError(ValidationError):
    """No action of this type is registered."""

    def __init__(self, action_type: str, known: list[str]) -> None:
        self.action_type = action_type
        choices = ", ".join(sorted(known)) or "none registered"
        super().__init__(
            [FieldError(field="action_type", reason=f"unknown action {action_type!r} ({choices})")]
        )


class TransientError(KarmaError):
    """A failure that may go away: retried under the action's retry policy.

    Args:
        message: what went wrong.
        retry_after: seconds to wait before the next attempt, overriding the backoff
            (for example an HTTP `Retry-After`).
    """

    retryable = True
    error_type = ErrorType.TRANSIENT

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after must be >= 0")
        self.retry_after = retry_after
        super().__init__(message)


class LocalTransientError(TransientError):
    """A transient failure on this side of a call (a full connection pool): it says
    nothing about the target, so circuit breakers do not count it."""


class PermanentError(KarmaError):
    """A failure that retrying cannot fix: the action fails at once."""

    error_type = ErrorType.PERMANENT


class PayloadTooLargeError(PermanentError):
    """What an executor returned is too large for the action's Temporal history."""

    error_type = ErrorType.PAYLOAD_TOO_LARGE


class LimitExceededError(PermanentError):
    """An attempt went past one of its action type's limits (`ActionMeta.limits`): its
    outputs, or its child process's memory or CPU time. The message names the limit."""

    error_type = ErrorType.LIMIT_EXCEEDED


def field_errors(exc: PydanticValidationError, prefix: str = "") -> list[FieldError]:
    """Turn pydantic's errors into field errors (`attrs.seq: Input should be ...`)."""
    out = []
    for err in exc.errors(include_url=False):
        path = ".".join(str(part) for part in err["loc"])
        out.append(FieldError(field=f"{prefix}{path}" or prefix or "(root)", reason=err["msg"]))
    return out


class TopicNotFoundError(KarmaError):
    """A Kafka topic Karma needs does not exist (yet): `karma setup` creates them."""

    retryable = True


class LedgerUnavailableError(KarmaError):
    """The ledger cannot be read from here (not created yet, or held by another process)."""

    retryable = True


class ActionEndedError(KarmaError):
    """The action has ended, so it takes no more events."""

    def __init__(self, action_id: str, detail: str) -> None:
        self.action_id = action_id
        super().__init__(f"action {action_id!r} has ended: {detail}")


class DecisionRefusedError(KarmaError):
    """The action did not accept a decision (not waiting for one, or the decision is
    malformed); nothing changed."""


class DuplicateActionError(KarmaError):
    """Two different executors claim the same action type."""


class ErrorInfo(BaseModel):
    """A serialisable description of an error, carried in events, status and outcomes."""

    type: ErrorType
    message: str
    retryable: bool = False
    code: str = Field(default="", description="the exception class that raised it")
    retry_after_s: float | None = None
    fields: list[FieldError] = Field(default_factory=list)

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        """Classify any exception: Karma errors keep their type, others are transient."""
        code = type(exc).__name__
        message = str(exc) or code
        if isinstance(exc, ValidationError):
            return cls(type=exc.error_type, message=message, code=code, fields=exc.errors)
        if isinstance(exc, TransientError):
            return cls(
                type=exc.error_type,
                message=message,
                code=code,
                retryable=True,
                retry_after_s=exc.retry_after,
            )
        if isinstance(exc, KarmaError):
            return cls(type=exc.error_type, message=message, code=code, retryable=exc.retryable)
        return cls(
            type=ErrorType.TRANSIENT, message=f"{code}: {message}", code=code, retryable=True
        )


class ActionUnreadableError(KarmaError):
    """The action's workflow exists but cannot answer (its workflow task keeps failing, or
    no worker polls its task queue)."""

    retryable = True


class ActionNotFoundError(KarmaError):
    """No action with this id exists (or it is past the namespace's retention)."""

    def __init__(self, action_id: str) -> None:
        self.action_id = action_id
        super().__init__(f"no action {action_id!r}")
