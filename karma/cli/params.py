"""Turning `--param NAME=VALUE` strings into typed parameter values."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from karma import untrusted_json
from karma.errors import FieldError, ValidationError
from karma.meta import ActionMeta, ParamDefinition, ParamType

_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off"}


def parse_params(
    meta: ActionMeta | None, pairs: Sequence[str], params_json: str | None = None
) -> dict[str, Any]:
    """Parse `--params-json` then every `--param`; report every malformed one at once."""
    errors: list[FieldError] = []
    params: dict[str, Any] = {}
    if params_json:
        try:
            params.update(untrusted_json.loads_object(_utf8(params_json)))
        except ValidationError as exc:
            raise ValidationError(
                [FieldError(field="--params-json", reason=e.reason) for e in exc.errors]
            ) from exc
    seen: set[str] = set()
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            errors.append(FieldError(field=f"--param {pair!r}", reason="expected NAME=VALUE"))
            continue
        if name in seen:
            errors.append(FieldError(field=f"params.{name}", reason="given more than once"))
            continue
        seen.add(name)
        definition = meta.param(name) if meta is not None else None
        try:
            params[name] = coerce(definition, raw)
        except ValueError as exc:
            errors.append(FieldError(field=f"params.{name}", reason=str(exc)))
    if errors:
        raise ValidationError(errors)
    return params


def coerce(definition: ParamDefinition | None, raw: str) -> Any:
    """The typed value of one command-line string (unknown names stay strings)."""
    if definition is None:
        return raw
    match definition.type:
        case ParamType.NUMBER:
            try:
                return int(raw)
            except ValueError:
                pass
            try:
                return float(raw)
            except ValueError:
                raise ValueError(f"must be a number, got {raw!r}") from None
        case ParamType.BOOLEAN:
            if raw.lower() in _TRUE:
                return True
            if raw.lower() in _FALSE:
                return False
            raise ValueError(f"must be true or false, got {raw!r}")
        case ParamType.MULTISELECT:
            if raw.lstrip().startswith("["):
                return _json(raw)
            return [part.strip() for part in raw.split(",") if part.strip()]
        case ParamType.JSON:
            return _json(raw)
        case _:
            return raw


def _json(raw: str) -> Any:
    try:
        return untrusted_json.loads(_utf8(raw))
    except ValidationError as exc:
        raise ValueError(exc.errors[0].reason) from None


def _utf8(text: str) -> bytes:
    """Command-line text as UTF-8 (undecodable argv bytes arrive as lone surrogates)."""
    return text.encode("utf-8", "surrogateescape")
