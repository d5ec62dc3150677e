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
import logging
import os
import sys
import weakref
from collections.abc import Mapping
from typing import Any

from karma._sandbox import MAX_RENDERED_CHARS, SANDBOX, TemplateProblem, compile_error, render_text
from karma.errors import FieldError, TransientError, ValidationError

__all__ = ["MAX_RENDERED_CHARS", "SANDBOX", "compile_problem", "render", "render_isolated"]

_CHILD = os.path.join(os.path.dirname(__file__), "_sandbox.py")
_PYTHON = sys.executable
RENDER_TIMEOUT_S = 8.0  # wall clock, from the child's start: past its CPU limit when busy
QUEUE_TIMEOUT_S = 3.0  # the longest a render waits for a free child
RENDER_CPU_S = 3
RENDER_MEMORY_BYTES = 512 * 1024 * 1024
MAX_STDERR_BYTES = 2048
# Children rendering at once, per event loop (each may take RENDER_MEMORY_BYTES).
_RENDERING: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)
log = logging.getLogger(__name__)


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
            field when the child went past its CPU time or memory.
        karma.errors.TransientError: the child could not be started, did not end within
            `timeout_s` (a busy worker), or failed for reasons of its own (logged).
    """
    job = json.dumps(
        {"templates": dict(templates), "context": dict(context), "limit": limit}, default=str
    ).encode()
    slots = _RENDERING.setdefault(
        asyncio.get_running_loop(), asyncio.Semaphore(max(2, os.cpu_count() or 2))
    )
    try:
        async with asyncio.timeout(QUEUE_TIMEOUT_S):
            await slots.acquire()
    except TimeoutError:
        raise TransientError("every template renderer is busy; will retry") from None
    try:
        out, err, code = await _run_child(job, timeout_s)
    finally:
        slots.release()
    try:
        answer = json.loads(out)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        if code < 0:  # stopped by a signal: its CPU time (SIGXCPU) or memory (SIGKILL)
            reason = f"could not be rendered within {RENDER_CPU_S} s of CPU and "
            reason += f"{RENDER_MEMORY_BYTES // 2**20} MiB (signal {-code})"
            raise _all(templates, reason)
        # Only what failed, not its message: that could quote a secret template.
        last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        log.error("the template renderer failed (exit %s): %s", code, last[0].split(":")[0])
        raise TransientError(f"the template renderer failed (exit {code})")
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


async def _run_child(job: bytes, timeout_s: float) -> tuple[bytes, bytes, int]:
    """(stdout, the end of stderr, exit code) of one rendering child."""
    try:
        process = await asyncio.create_subprocess_exec(
            _PYTHON, "-I", _CHILD, str(RENDER_CPU_S), str(RENDER_MEMORY_BYTES),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
    except OSError as exc:  # no process to be had now (EAGAIN, EMFILE...)
        raise TransientError(f"cannot start the template renderer: {exc}") from exc
    try:
        out, err = await asyncio.wait_for(process.communicate(job), timeout_s)
    except TimeoutError:
        raise TransientError(f"the template took longer than {timeout_s:g} s to render") from None
    finally:
        _kill(process)  # nothing left behind (it has ended unless something went wrong)
        await process.wait()
    return out, err[-MAX_STDERR_BYTES:], process.returncode or 0


def _hidden(problem: TemplateProblem) -> str:
    where = f" (line {problem.line})" if problem.line else ""
    return f"the secret template cannot be used{where}"


def _all(templates: Mapping[str, str], reason: str) -> ValidationError:
    return ValidationError([FieldError(field=f, reason=reason) for f in templates])


def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.kill()
