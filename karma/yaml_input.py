"""YAML documents from users (rules files, pipeline specs): parsed safely, bounded, and
refused with the line and column where YAML stopped."""

from __future__ import annotations

from typing import Any

import yaml

from karma.errors import FieldError, ValidationError

MAX_CHARS = 1 << 20


def bounded(document: Any, *, max_nodes: int = 100_000, max_depth: int = 64) -> None:
    """Refuse a document too large or deep (a YAML alias bomb, a self-reference).

    Raises:
        ValueError: naming the limit.
    """
    stack: list[tuple[Any, int]] = [(document, 0)]
    seen = 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > max_nodes:
            raise ValueError(f"more than {max_nodes} values (aliases expanded)")
        if depth > max_depth:
            raise ValueError(f"nested deeper than {max_depth} levels")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def load_mapping(text: str, source: str, what: str = "a mapping") -> dict[str, Any]:
    """The YAML mapping in `text`.

    Raises:
        karma.errors.ValidationError: not YAML (naming line and column), too large or
            deep, or not a mapping.
    """
    if len(text) > MAX_CHARS:
        raise ValidationError(
            [FieldError(field=source, reason=f"larger than {MAX_CHARS} characters")]
        )
    try:
        document = yaml.safe_load(text)
        bounded(document)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else source
        raise ValidationError([FieldError(field=where, reason=f"not YAML: {exc}")]) from exc
    except (ValueError, RecursionError, MemoryError) as exc:
        raise ValidationError([FieldError(field=source, reason=str(exc) or "too large")]) from exc
    if not isinstance(document, dict):
        raise ValidationError([FieldError(field=source, reason=f"expected {what}")])
    return document
