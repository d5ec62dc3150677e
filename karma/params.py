"""Request parameters checked against an action's metadata, exported as JSON Schema, redacted."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from karma.errors import FieldError, ValidationError
from karma.meta import ActionMeta, ParamDefinition, ParamType
from karma.templates import render_isolated

REDACTED = "***"


def validate_params(
    meta: ActionMeta, params: Mapping[str, Any], *, rendered: bool = False
) -> dict[str, Any]:
    """Return the parameters with defaults applied, or raise listing every bad field.

    A `None` value counts as absent. Unknown names are errors, so a typo never goes unnoticed.
    `rendered`: the params a first run prepared (a continued run's): TEMPLATE values are
    rendered text, not templates, and REF values canonical ids, of any length.
    """
    errors: list[FieldError] = []
    result: dict[str, Any] = {}
    known = {p.name for p in meta.params}
    for name in params:
        if name not in known:
            errors.append(FieldError(field=f"params.{name}", reason="unknown parameter"))
    for definition in meta.params:
        value = params.get(definition.name)
        if value is None:
            if definition.required:
                errors.append(
                    FieldError(
                        field=f"params.{definition.name}", reason="required parameter is missing"
                    )
                )
            elif definition.default is not None:
                result[definition.name] = definition.default
            continue
        if rendered and definition.type in (ParamType.TEMPLATE, ParamType.REF):
            # Rendered text may be empty; a canonical id may not (of any length).
            empty = definition.type is ParamType.REF and not value
            problem = None if isinstance(value, str) and not empty else "must be a string"
        else:
            problem = definition.problem_with(value)
        if problem:
            errors.append(FieldError(field=f"params.{definition.name}", reason=problem))
        else:
            result[definition.name] = list(value) if isinstance(value, tuple) else value
    if errors:
        raise ValidationError(errors)
    return result


async def render_templates(
    meta: ActionMeta, params: Mapping[str, Any], context: Mapping[str, Any]
) -> dict[str, Any]:
    """The params with each TEMPLATE value rendered (`karma.templates.render_isolated`). A
    template sees `params` (the others, without secrets and templates) plus `context`
    (action_id, entity_id, tags, and in a pipeline `steps.<id>.outputs`).

    Raises:
        karma.errors.ValidationError: naming each template that cannot be rendered.
    """
    names = [p.name for p in meta.params if p.type is ParamType.TEMPLATE]
    templates = {f"params.{n}": params[n] for n in names if isinstance(params.get(n), str)}
    if not templates:
        return dict(params)
    hidden = meta.secret_params | set(names)
    seen = {"params": {k: v for k, v in params.items() if k not in hidden}, **context}
    secret = frozenset(f"params.{n}" for n in meta.secret_params)
    rendered = await render_isolated(templates, seen, secret=secret)
    return {**params, **{field.removeprefix("params."): v for field, v in rendered.items()}}


def redact_params(meta: ActionMeta | None, params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters safe to publish: secret values replaced by `***`.

    Without metadata (an unknown action type) nothing is known to be safe, so every value
    is redacted.
    """
    secret = meta.secret_params if meta is not None else frozenset(params)
    return {k: (REDACTED if k in secret else v) for k, v in params.items()}


def params_json_schema(meta: ActionMeta) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) describing the action's parameters."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": meta.name,
        "description": meta.description,
        "type": "object",
        "properties": {p.name: _property_schema(p) for p in meta.params},
        "required": [p.name for p in meta.params if p.required],
        "additionalProperties": False,
    }


def _property_schema(definition: ParamDefinition) -> dict[str, Any]:
    schema: dict[str, Any]
    match definition.type:
        case ParamType.STRING:
            schema = {"type": "string"}
        case ParamType.NUMBER:
            schema = {"type": "number"}
            if definition.min is not None:
                schema["minimum"] = definition.min
            if definition.max is not None:
                schema["maximum"] = definition.max
        case ParamType.BOOLEAN:
            schema = {"type": "boolean"}
        case ParamType.SELECT:
            schema = {"type": "string", "enum": list(definition.options)}
        case ParamType.MULTISELECT:
            schema = {
                "type": "array",
                "items": {"type": "string", "enum": list(definition.options)},
                "uniqueItems": True,
            }
        case ParamType.JSON:
            schema = {}
        case ParamType.TEMPLATE:
            schema = {"type": "string", "x-karma-template": "jinja2"}
        case ParamType.REF:
            schema = {"type": "string", "minLength": 1, "x-karma-ref-kind": definition.ref_kind}
    if definition.description:
        schema["description"] = definition.description
    if definition.default is not None:
        schema["default"] = definition.default
    if definition.secret:
        schema["writeOnly"] = True
    return schema
