"""The Jinja2 sandbox of Karma's templates, and a child process that renders in it.

Jinja2's immutable sandbox refuses attribute access to Python internals and calls that
change values; on top of it, products and powers that would build huge values are refused
and the output is cut off (as an error) past its limit while it is produced. What an
in-process sandbox cannot bound (loops that take minutes, filters that build one huge
string) is bounded by rendering in a child process under RLIMIT_CPU and RLIMIT_AS, stopped
after a deadline (`karma.templates.render_isolated`).

Run as a file (`python -I _sandbox.py CPU_SECONDS MEMORY_BYTES`): it reads
`{"templates": {field: text}, "context": {...}, "limit": n}` on stdin and writes
`{"rendered": {field: text}}` or `{"errors": [{"field", "reason", "line"}]}`. Only jinja2
and the standard library are imported here.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

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

# What an expression may raise on the values it is given (a string plus a number...), and
# what a template too deep or too large for the interpreter raises.
RENDER_ERRORS = (
    TemplateError,
    ArithmeticError,
    TypeError,
    ValueError,
    LookupError,
    RecursionError,
    MemoryError,
)


class TemplateProblem(Exception):
    """Why a template cannot be compiled or rendered; `line` when Jinja2 knows it."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line


def compile_error(text: str) -> TemplateProblem | None:
    """Why `text` does not compile (with its line), or None."""
    try:
        SANDBOX.parse(text)
    except TemplateSyntaxError as exc:
        return TemplateProblem(f"does not compile (line {exc.lineno}): {exc.message}", exc.lineno)
    except (TemplateError, RecursionError, MemoryError) as exc:
        return TemplateProblem(f"does not compile: {type(exc).__name__}")
    return None


def render_text(text: str, context: dict[str, Any], limit: int) -> str:
    """`text` rendered against `context`, at most `limit` characters.

    Raises:
        TemplateProblem: it does not compile, an expression failed, or it is too long.
    """
    problem = compile_error(text)
    if problem is not None:
        raise problem
    produced: list[str] = []
    size = 0
    try:
        for chunk in SANDBOX.from_string(text).generate(context):
            size += len(chunk)
            if size > limit:
                raise TemplateProblem(f"renders to more than {limit:,} characters")
            produced.append(chunk)
    except MemoryError as exc:
        raise TemplateProblem("template: ran out of memory (it builds too large a value)") from exc
    except RENDER_ERRORS as exc:
        raise TemplateProblem(f"template: {type(exc).__name__}: {exc}") from exc
    return "".join(produced)


def main(args: list[str]) -> int:
    import resource

    cpu, memory = int(args[0]), int(args[1])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    job = json.loads(sys.stdin.buffer.read())
    rendered: dict[str, str] = {}
    errors: list[dict[str, Any]] = []
    for field, text in job["templates"].items():
        try:
            rendered[field] = render_text(text, job["context"], int(job["limit"]))
        except TemplateProblem as exc:
            errors.append({"field": field, "reason": exc.reason, "line": exc.line})
    answer = {"errors": errors} if errors else {"rendered": rendered}
    sys.stdout.write(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
