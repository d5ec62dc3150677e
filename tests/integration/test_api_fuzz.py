"""The API fuzzed from its own OpenAPI schema (schemathesis, run as its CLI against a live
API on the real stack): no 5xx, and every response conforms to the schema.

The fuzzed API has a registry of harmless actions only, run by a worker of its own on
its own task queue; what is still running afterwards is terminated."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from karma.actions.approval import ApprovalExecutor
from karma.actions.log import LogExecutor
from karma.api.app import ApiServices
from karma.api.hub import TransitionHub
from karma.api.keys import Scope
from karma.api.server import ApiServer
from karma.client import KarmaClient
from karma.embedded.process import free_port
from karma.registry import ActionRegistry
from tests.support.api import new_key
from workers.embedded import EmbeddedKarma
from workers.worker import ActionWorker

QUEUE = "fuzz-api"
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    ]
)


@pytest.fixture
async def fuzzed_api(karma: EmbeddedKarma) -> AsyncIterator[ApiServer]:
    # Its own port, and a rate no fuzzer reaches (429 is a documented answer all the same).
    api = karma.settings.api.model_copy(update={"port": free_port(), "rate_limit": "10000/second"})
    settings = karma.settings.model_copy(update={"api": api})
    registry = ActionRegistry()
    registry.add(LogExecutor)
    registry.add(ApprovalExecutor)  # waits for a decision: decisions get fuzzed too
    client = KarmaClient(
        karma.temporal, task_queue=QUEUE, registry=registry, limits=settings.limits
    )
    assert karma.api is not None
    services = ApiServices(
        client=client,
        settings=settings,
        hub=TransitionHub(settings),
        ledger=karma.api.services.ledger,  # this process owns the ledger
        analytics=karma.api.services.analytics,
    )
    worker = ActionWorker(karma.temporal, settings, registry=registry, task_queue=QUEUE)
    async with worker, ApiServer(services) as server:
        yield server
    async for execution in karma.temporal.list_workflows(f"TaskQueue = '{QUEUE}'"):
        if execution.close_time is None:
            await karma.temporal.get_workflow_handle(execution.id).terminate("fuzzed")


async def test_no_input_makes_the_api_fail_or_answer_off_schema(
    karma: EmbeddedKarma, fuzzed_api: ApiServer, tmp_path: Path, report: Callable[[str], None]
) -> None:
    st = shutil.which("st") or str(Path(sys.executable).parent / "st")
    key = new_key(karma, Scope.ADMIN, name="fuzzer")

    process = await asyncio.create_subprocess_exec(
        st, "run", f"{fuzzed_api.url}/openapi.json",
        "--header", f"Authorization: Bearer {key}",
        "--checks", CHECKS,
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", "25",
        # One worker: with two, the generator's own ast.parse calls race in CPython 3.11
        # (python/cpython#106905, "AST constructor recursion depth mismatch"): it hit two CI
        # runs in a row (one failed, one needed a second run) while every request passed.
        "--workers", "1",
        "--exclude-path-regex", "/transitions$",  # an event stream does not end by itself
        "--seed", "20261125",
        "--generation-database", "none",
        "--request-timeout", "30",
        "--no-color",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 600)
    text = out.decode(errors="replace")
    (tmp_path / "schemathesis.txt").write_text(text)
    assert process.returncode == 0, text[-6000:]
    generated = re.search(r"(\d+) generated", text)
    assert generated and int(generated.group(1)) > 100, text[-3000:]
    report(f"schemathesis: {generated.group(1)} generated requests, no 5xx, all on schema")
