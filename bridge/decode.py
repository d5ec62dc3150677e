"""Decoding Kafka message values into envelopes, with reasons that name the field.

Every function here raises only `karma.errors.ValidationError` for bad bytes, whatever they
are (size, encoding, nesting and number limits are checked by `karma.untrusted_json` before
anything is parsed), so a consumer built on them dead-letters a message instead of stopping.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import ValidationError as PydanticValidationError

from karma import untrusted_json
from karma.errors import ValidationError, field_errors
from karma.events import KARMA_SYSTEM, ActionEvent, Envelope
from karma.settings import LimitsSettings

M = TypeVar("M", bound=Envelope)


def decode_json(raw: bytes | None, limits: LimitsSettings | None = None) -> dict[str, Any]:
    """A JSON object within the limits."""
    return untrusted_json.loads_object(raw, limits)


def decode_envelope(raw: bytes | None, limits: LimitsSettings | None = None) -> Envelope:
    return _validated(Envelope, decode_json(raw, limits))


def is_karma_transition(envelope: Envelope) -> bool:
    """Karma's own mirrored transitions, as opposed to requests and callbacks from others."""
    return envelope.source.system == KARMA_SYSTEM and envelope.seq > 0


def _claims_karma(data: dict[str, Any]) -> bool:
    source = data.get("source")
    return (
        isinstance(source, dict) and source.get("system") == KARMA_SYSTEM and bool(data.get("seq"))
    )


def claims_to_be_transition(raw: bytes | None, limits: LimitsSettings | None = None) -> bool:
    """Whether a message says it is one of Karma's transitions (valid or not)."""
    try:
        return _claims_karma(decode_json(raw, limits))
    except ValidationError:
        return False


def decode_foreign_envelope(
    raw: bytes | None, limits: LimitsSettings | None = None
) -> Envelope | None:
    """The envelope of a message from another system, or None when the message claims to
    be one of Karma's transitions (valid or not: the ledger sink judges those, once)."""
    data = decode_json(raw, limits)
    return None if _claims_karma(data) else _validated(Envelope, data)


def decode_transition(
    raw: bytes | None, limits: LimitsSettings | None = None
) -> ActionEvent | None:
    """The transition in a message, or None if the message is a valid envelope that is not
    one of Karma's transitions (an external request on `actions.requested`)."""
    data = decode_json(raw, limits)
    # Karma's own transitions (the bulk of the traffic) are validated once, directly.
    if _claims_karma(data):
        return _validated(ActionEvent, data)
    envelope = _validated(Envelope, data)
    return _validated(ActionEvent, data) if is_karma_transition(envelope) else None


def _validated(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        raise ValidationError(field_errors(exc)) from exc
