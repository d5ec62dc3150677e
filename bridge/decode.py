"""Decoding Kafka message values into envelopes, with reasons that name the field.

Every function here raises only `karma.errors.ValidationError` for bad bytes, whatever they
are (size, encoding, nesting and number limits are checked by `karma.untrusted_json` before
anything is parsed), so a consumer built on them dead-letters a message instead of stopping.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import ValidationError as PydanticValidationError

from karma import names, untrusted_json
from karma.envelope import KARMA_SYSTEM, Envelope, Transition
from karma.errors import FieldError, ValidationError, field_errors
from karma.settings import LimitsSettings

M = TypeVar("M", bound=Envelope)


def decode_json(raw: bytes | None, limits: LimitsSettings | None = None) -> dict[str, Any]:
    """A JSON object within the limits."""
    return untrusted_json.loads_object(raw, limits)


def decode_envelope(raw: bytes | None, limits: LimitsSettings | None = None) -> Envelope:
    return _validated(Envelope, decode_json(raw, limits))


def _claims_karma(data: dict[str, Any]) -> bool:
    source = data.get("source")
    return (
        isinstance(source, dict) and source.get("system") == KARMA_SYSTEM and bool(data.get("seq"))
    )


def decode_foreign_envelope(raw: bytes | None, limits: LimitsSettings | None = None) -> Envelope:
    """The envelope of a message from another system.

    Raises:
        karma.errors.ValidationError: also for what claims to be one of Karma's own
            transitions: Karma marks those with a header, and one without it is forged
            (or older than the header: `karma ledger reconcile` publishes it again).
    """
    data = decode_json(raw, limits)
    if _claims_karma(data):
        reason = (
            f"claims to be one of Karma's transitions but lacks the {names.TRANSITION_HEADER} "
            "header Karma publishes them with"
        )
        raise ValidationError([FieldError(field="source", reason=reason)])
    return _validated(Envelope, data)


def decode_transition(raw: bytes | None, limits: LimitsSettings | None = None) -> Transition:
    """The transition in a message on a transition topic (or marked as one)."""
    return _validated(Transition, decode_json(raw, limits))


def _validated(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        raise ValidationError(field_errors(exc)) from exc
