"""Jinja2 templates Karma renders: TEMPLATE parameters and rules' params.

The sandbox is `karma._sandbox`. Rules' templates (written by operators) render in
process; TEMPLATE parameters (written by whoever may request an action) render in a child
process bounded in CPU time, memory and wall-clock time, so a template cannot stall or
exhaust the worker. An error about a secret parameter keeps its text out of the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

from karma._sandbox import MAX_RENDERED_CHARS, SANDBOX, TemplateProblem, compile_error, render_text
from karma.errors import FieldError, ValidationError

__all__ = ["MAX_RENDERED_CHARS", "SANDBOX", "compile_problem", "render", "render_isolated"]

_CHILD = os.path.join(os.path.dirname(__file__), "_sandbox.py")
RENDER_TIMEOUT_S = 5.0
RENDER_CPU_S = 3
RENDER_MEMORY_BYTES = 512 * 1024 * 1024


def compile_problem(text: str, *, reveal: bool = True) -> str | None:
    """Why `text` is not a template that compiles (with the line), or None; without
    `reveal`, only the line (Jinja2's message may quote the text)."""
    problem = compile_error(text)
    if problem is None:
        return None
    return problem.reason if reveal else _hidden(problem)


def render(
    field: str, text: str, context: Mapping[str, Any], limit: int = MAX_RENDERED_CHARS
) -> str:
    """`text` rendered in this process (rules: operators' templates).

    Raises:
        karma.errors.ValidationError: naming `field`.
    """
    try:
        return render_text(text, dict(context), limit)
    except TemplateProblem as exc:
        raise ValidationError([FieldError(field=field, reason=exc.reason)]) from exc


async def render_isolated(
    templates: Mapping[str, str],
    context: Mapping[str, Any],
    *,
    secret: frozenset[str] = frozenset(),
    limit: int = MAX_RENDERED_CHARS,
    timeout_s: float = RENDER_TIMEOUT_S,
) -> dict[str, str]:
    """Each of `templates` (field → text) rendered in a child process.

    Raises:
        karma.errors.ValidationError: naming each field that cannot be rendered, or every
            field when the child ran out of time, CPU or memory.
    """
    job = json.dumps(
        {"templates": dict(templates), "context": dict(context), "limit": limit}, default=str
    ).encode()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-I", _CHILD, str(RENDER_CPU_S), str(RENDER_MEMORY_BYTES),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(process.communicate(job), timeout_s)
    except TimeoutError:
        _kill(process)
        await process.wait()
        raise _all(templates, f"took longer than {timeout_s:g} s to render") from None
    except BaseException:
        _kill(process)
        raise
    try:
        answer = json.loads(out)
    except ValueError:
        reason = f"could not be rendered within {RENDER_CPU_S} s of CPU and "
        reason += f"{RENDER_MEMORY_BYTES // 2**20} MiB (exit {process.returncode})"
        raise _all(templates, reason) from None
    if answer.get("errors"):
        raise ValidationError(
            [
                FieldError(
                    field=e["field"],
                    reason=_hidden(TemplateProblem(e["reason"], e.get("line")))
                    if e["field"] in secret
                    else e["reason"],
                )
                for e in answer["errors"]
            ]
        )
    return {field: str(answer["rendered"][field]) for field in templates}


def _hidden(problem: TemplateProblem) -> str:
    where = f" (line {problem.line})" if problem.line else ""
    return f"the secret template cannot be used{where}"


def _all(templates: Mapping[str, str], reason: str) -> ValidationError:
    return ValidationError([FieldError(field=f, reason=reason) for f in templates])


def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.kill()
