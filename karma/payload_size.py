"""Sizes of what enters an action's Temporal history, checked before it gets there.

Temporal refuses a payload over 2 MB by failing the workflow task, again and again: an
action would sit in REQUESTED forever. So requests and callbacks are measured at the door
(the SDK, the CLI and the ingress refuse them with the sizes) and executors' results in the
worker (the action fails with `payload_too_large`). Large data belongs elsewhere, passed by
reference (the claim-check pattern, see the README).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from karma.errors import FieldError, LimitExceededError, PayloadTooLargeError, ValidationError
from karma.meta import ActionMeta

LIMIT_SETTING = "KARMA_LIMITS__MAX_PAYLOAD_BYTES"
NAMED = 3  # how many of the largest fields a refusal names


def encoded_size(model: BaseModel) -> int:
    """Bytes of the model as the JSON data converter encodes it."""
    return len(model.model_dump_json().encode("utf-8"))


def _largest(values: Mapping[str, Any], prefix: str) -> list[tuple[str, int]]:
    sizes = [
        (f"{prefix}{name}", len(json.dumps(value, default=str).encode("utf-8")))
        for name, value in values.items()
    ]
    return sorted(sizes, key=lambda item: -item[1])[:NAMED]


def _explain(what: str, size: int, limit: int) -> str:
    return (
        f"{what} is {size:,} bytes encoded, over the limit of {limit:,} ({LIMIT_SETTING}); "
        "pass large data by reference (claim check)"
    )


def check_request(model: BaseModel, params: Mapping[str, Any], limit: int) -> None:
    """Refuse a request too large for a workflow input, naming its largest parameters.

    Raises:
        karma.errors.ValidationError: one error per large parameter, sizes in the reason.
    """
    size = encoded_size(model)
    if size <= limit:
        return
    largest = _largest(params, "params.")
    errors = [
        FieldError(field=name, reason=f"{bytes_:,} bytes; " + _explain("the request", size, limit))
        for name, bytes_ in largest
    ] or [FieldError(field="(request)", reason=_explain("the request", size, limit))]
    raise ValidationError(errors)


def check_event(model: BaseModel, limit: int) -> None:
    """Refuse a callback event too large to be signalled.

    Raises:
        karma.errors.ValidationError: naming the largest `attrs`.
    """
    size = encoded_size(model)
    if size <= limit:
        return
    attrs = getattr(model, "attrs", {}) or {}
    named = ", ".join(f"{name} ({bytes_:,} bytes)" for name, bytes_ in _largest(attrs, "attrs."))
    reason = _explain("the event", size, limit) + (f"; largest: {named}" if named else "")
    raise ValidationError([FieldError(field="(event)", reason=reason)])


def check_result(model: BaseModel, outputs: Mapping[str, Any], limit: int, what: str) -> None:
    """Refuse an executor's result too large for the history.

    Raises:
        karma.errors.PayloadTooLargeError: naming the largest outputs.
    """
    size = encoded_size(model)
    if size <= limit:
        return
    named = ", ".join(f"{name} ({bytes_:,} bytes)" for name, bytes_ in _largest(outputs, ""))
    reason = _explain(what, size, limit) + (f"; largest outputs: {named}" if named else "")
    raise PayloadTooLargeError(reason)


def check_output_limit(meta: ActionMeta, outputs: Mapping[str, Any]) -> None:
    """Refuse outputs over the action type's `limits.max_output_bytes`.

    Raises:
        karma.errors.LimitExceededError: naming the limit and the largest outputs.
    """
    limit = meta.limits.max_output_bytes
    if limit is None:
        return
    size = len(json.dumps(outputs, default=str).encode("utf-8"))
    if size <= limit:
        return
    named = ", ".join(f"{name} ({bytes_:,} bytes)" for name, bytes_ in _largest(outputs, ""))
    raise LimitExceededError(
        f"limit max_output_bytes exceeded: the outputs are {size:,} bytes, over the "
        f"{limit:,} allowed for {meta.type!r}" + (f"; largest: {named}" if named else "")
    )
