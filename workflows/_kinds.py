"""Which module runs which kind of action. Adding a kind: its author-side base class (in
`karma/`), its run module here, and one row in this table."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from temporalio import workflow

from workflows import _execute, _interactive, _iterations, _saga
from workflows._context import RunContext
from workflows._ending import Ending

with workflow.unsafe.imports_passed_through():
    from karma.meta import ExecutionMode

Kind = Callable[[RunContext], Awaitable[Ending]]

KINDS: dict[ExecutionMode, Kind] = {
    ExecutionMode.SYNC: _execute.run,
    ExecutionMode.EVENT_DRIVEN: _execute.run,
    ExecutionMode.TRANSACTIONAL: _saga.run,
    ExecutionMode.INTERACTIVE: _interactive.run,
    ExecutionMode.STATEFUL: _iterations.run,
}
