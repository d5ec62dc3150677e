"""Observations: what other systems saw, in the same envelope as transitions, on
`events.normalized`. The bridge stores them in the `observations` table beside the ledger.

The convention for processes (the entropy layer builds on it):

- `correlation_id` names one run of a process (a deploy, a batch, an order);
- `attrs.step` names the step the observation is about;
- `attrs.duration_ms` is the step's duration, when the source knows it (stored empty
  otherwise: the entropy layer takes the time since the run's previous observation);
- `attrs.status` is the step's outcome (`ok`, `failed`, ...).

An observation without an `event_id` gets one derived from its content, so the same
observation sent twice is stored once.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from karma import untrusted_json
from karma.envelope import Envelope
from karma.errors import FieldError, ValidationError, field_errors
from karma.settings import LimitsSettings

EVENT_ID_PREFIX = "obs_"
MAX_DURATION_MS = 2**63 - 1
RESERVED_EVENT_TYPES = frozenset({"entropy.deviation", "entropy.predicted", "rule.scheduled"})
RESERVED_STEP_PREFIX = "$"  # `$start`, `$end`: the entropy layer's markers


def event_id_for(document: dict[str, Any]) -> str:
    """The id of an observation that came without one: its canonical content's digest."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return EVENT_ID_PREFIX + hashlib.sha256(canonical.encode()).hexdigest()[:32]


def observation(document: dict[str, Any]) -> Envelope:
    """An observation from a decoded JSON object.

    Raises:
        karma.errors.ValidationError: naming each field that cannot be used.
    """
    if "action_id" in document or "seq" in document:
        reason = "an observation names no action (transitions go to the actions.* topics)"
        field = "action_id" if "action_id" in document else "seq"
        raise ValidationError([FieldError(field=field, reason=reason)])
    try:
        envelope = Envelope.model_validate(document)
    except PydanticValidationError as exc:
        raise ValidationError(field_errors(exc)) from exc
    errors = _convention_errors(envelope.attrs)
    if not envelope.event_type:
        errors.append(FieldError(field="event_type", reason="must not be empty"))
    if envelope.event_type in RESERVED_EVENT_TYPES:
        reason = "is Karma's own (deviations, predictions, rule firings are not observations)"
        errors.append(FieldError(field="event_type", reason=reason))
    if errors:
        raise ValidationError(errors)
    if not envelope.event_id:
        envelope = envelope.model_copy(update={"event_id": event_id_for(document)})
    return envelope


def decode_observation(raw: bytes | None, limits: LimitsSettings | None = None) -> Envelope:
    """The observation in a message on `events.normalized`.

    Raises:
        karma.errors.ValidationError: for any bytes that are not one.
    """
    return observation(untrusted_json.loads_object(raw, limits))


def _convention_errors(attrs: dict[str, Any]) -> list[FieldError]:
    errors = []
    for name in ("step", "status"):
        value = attrs.get(name)
        if value is not None and not isinstance(value, str):
            errors.append(FieldError(field=f"attrs.{name}", reason="must be a string"))
    step = attrs.get("step")
    if isinstance(step, str) and step.startswith(RESERVED_STEP_PREFIX):
        reason = f"must not start with {RESERVED_STEP_PREFIX!r} ($start, $end: the entropy layer's)"
        errors.append(FieldError(field="attrs.step", reason=reason))
    duration = attrs.get("duration_ms")
    if duration is not None and (
        isinstance(duration, bool)
        or not isinstance(duration, int | float)
        or not 0 <= duration <= MAX_DURATION_MS
    ):
        reason = f"must be a number of milliseconds from 0, got {str(duration)[:40]!r}"
        errors.append(FieldError(field="attrs.duration_ms", reason=reason))
    return errors
