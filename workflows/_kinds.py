"""Which module runs which kind of action: each `workflows/_<kind>.py` declares the
execution modes it runs (`MODES`) and `async def run(ctx: RunContext) -> Ending`. Adding a
kind is adding its module: this table finds it."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Awaitable, Callable

from temporalio import workflow

import workflows
from workflows._context import RunContext
from workflows._ending import Ending

with workflow.unsafe.imports_passed_through():
    from karma.meta import ExecutionMode

Kind = Callable[[RunContext], Awaitable[Ending]]


def _kinds() -> dict[ExecutionMode, Kind]:
    table: dict[ExecutionMode, Kind] = {}
    for found in pkgutil.iter_modules(workflows.__path__):
        if not found.name.startswith("_") or found.name == "_kinds":
            continue
        module = importlib.import_module(f"workflows.{found.name}")
        for mode in getattr(module, "MODES", ()):
            table[mode] = module.run
    return table


KINDS = _kinds()
