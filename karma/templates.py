"""Jinja2 templates Karma renders (TEMPLATE parameters, rules' params): one sandbox.

Jinja2's immutable sandbox refuses attribute access to Python internals and calls that
change values; on top of it, multiplying a string or list and raising to a power are
bounded, so a template cannot build a huge value in one expression, and the rendered text
is cut off (as an error) past its limit while it is produced. Undefined names are errors.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from karma.errors import FieldError, ValidationError

MAX_RENDERED_CHARS = 65_536
MAX_EXPONENT = 1024


class _Bounded(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for sized, times in ((left, right), (right, left)):
                if (
                    isinstance(sized, str | list | tuple | bytes)
                    and isinstance(times, int)
                    and len(sized) * times > MAX_RENDERED_CHARS
                ):
                    raise SecurityError(
                        f"a value of {len(sized) * times:,} items is over the "
                        f"{MAX_RENDERED_CHARS:,} a template may build"
                    )
            return left * right
        if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"an exponent over {MAX_EXPONENT} is not allowed")
        return left**right


SANDBOX = _Bounded(undefined=StrictUndefined, autoescape=False)

# What an expression may raise on the values it is given (a string plus a number...).
RENDER_ERRORS = (TemplateError, ArithmeticError, TypeError, ValueError, LookupError)


def compile_problem(text: str) -> str | None:
    """Why `text` is not a template that compiles (with the line), or None."""
    try:
        SANDBOX.parse(text)
    except TemplateSyntaxError as exc:
        return f"does not compile (line {exc.lineno}): {exc.message}"
    except TemplateError as exc:
        return f"does not compile: {exc}"
    return None


def render(
    field: str, text: str, context: Mapping[str, Any], limit: int = MAX_RENDERED_CHARS
) -> str:
    """`text` rendered against `context`, at most `limit` characters.

    Raises:
        karma.errors.ValidationError: naming `field`: it does not compile, an expression
            failed (an undefined name, a refused operation), or the text is too long.
    """
    try:
        produced: list[str] = []
        size = 0
        for chunk in SANDBOX.from_string(text).generate(dict(context)):
            size += len(chunk)
            if size > limit:
                reason = f"renders to more than {limit:,} characters"
                raise ValidationError([FieldError(field=field, reason=reason)])
            produced.append(chunk)
    except TemplateSyntaxError as exc:
        reason = f"template does not compile (line {exc.lineno}): {exc.message}"
        raise ValidationError([FieldError(field=field, reason=reason)]) from exc
    except RENDER_ERRORS as exc:
        reason = f"template: {type(exc).__name__}: {exc}"
        raise ValidationError([FieldError(field=field, reason=reason)]) from exc
    return "".join(produced)
