"""Decoding Kafka message values into envelopes, with reasons that name the field."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from karma.errors import FieldError, ValidationError, field_errors
from karma.events import KARMA_SYSTEM, ActionEvent, Envelope


def decode_json(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        raise ValidationError([FieldError(field="(value)", reason="message has no value")])
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError([FieldError(field="(value)", reason=f"not JSON: {exc}")]) from exc
    if not isinstance(data, dict):
        reason = f"expected a JSON object, got {type(data).__name__}"
        raise ValidationError([FieldError(field="(value)", reason=reason)])
    return data


def decode_envelope(raw: bytes | None) -> Envelope:
    try:
        return Envelope.model_validate(decode_json(raw))
    except PydanticValidationError as exc:
        raise ValidationError(field_errors(exc)) from exc


def is_karma_transition(envelope: Envelope) -> bool:
    """Karma's own mirrored transitions, as opposed to requests and callbacks from others."""
    return envelope.source.system == KARMA_SYSTEM and envelope.seq > 0


def _claims_karma(data: dict[str, Any]) -> bool:
    source = data.get("source")
    return (
        isinstance(source, dict) and source.get("system") == KARMA_SYSTEM and bool(data.get("seq"))
    )


def claims_to_be_transition(raw: bytes | None) -> bool:
    """Whether a message says it is one of Karma's transitions (valid or not)."""
    try:
        return _claims_karma(decode_json(raw))
    except ValidationError:
        return False


def decode_transition(raw: bytes | None) -> ActionEvent | None:
    """The transition in a message, or None if the message is a valid envelope that is not
    one of Karma's transitions (an external request on `actions.requested`)."""
    data = decode_json(raw)
    try:
        # Karma's own transitions (the bulk of the traffic) are validated once, directly.
        if _claims_karma(data):
            return ActionEvent.model_validate(data)
        envelope = Envelope.model_validate(data)
        return ActionEvent.model_validate(data) if is_karma_transition(envelope) else None
    except PydanticValidationError as exc:
        raise ValidationError(field_errors(exc)) from exc
