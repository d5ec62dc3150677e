"""One embedded stack for every figure: Karma (worker, bridge, ledger) and, on the same
server and with the same worker settings, a bare workflow with one activity."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from temporalio.worker import Worker

from bench.bare import BareWorkflow, NoopExecutor, bare_activity
from karma.client import KarmaClient
from karma.embedded.stack import with_free_ports
from karma.lifecycle import ActionState
from karma.registry import default_registry
from karma.request import ActionRequest
from karma.settings import ApiSettings, Settings
from workers.embedded import EmbeddedKarma
from workers.worker import ActionWorker, workflow_runner

BARE_QUEUE = "bench-bare"
# Karma as it ran before the speed work, beside it in the same run: requests made for
# contract 1 (a search-attribute upsert for STARTED, activities by name) on a worker that
# runs the workflow in the sandbox.
BEFORE_QUEUE = "bench-before"


@dataclass
class BenchStack:
    karma: EmbeddedKarma
    client: KarmaClient
    settings: Settings
    run_id: str

    @property
    def pids(self) -> dict[str, int | None]:
        return self.karma.servers.pids()

    async def bare(self, i: int) -> None:
        await self.karma.temporal.execute_workflow(
            BareWorkflow.run, "x", id=f"bare-{self.run_id}-{i}-{uuid.uuid4().hex[:6]}",
            task_queue=BARE_QUEUE,
        )  # fmt: skip

    async def action(self, i: int) -> None:
        outcome = await (await self.client.request("bench.noop")).result()
        assert outcome.state is ActionState.SUCCEEDED, outcome

    async def started_action(self, i: int) -> str:
        return (await self.client.request("bench.noop")).action_id

    async def before_action(self, i: int) -> None:
        request = ActionRequest.new("bench.noop").model_copy(update={"contract": 1})
        handle = await self.client.submit(request, task_queue=BEFORE_QUEUE)
        outcome = await handle.result()
        assert outcome.state is ActionState.SUCCEEDED, outcome


@asynccontextmanager
async def bench_stack(*, in_memory: bool) -> AsyncIterator[BenchStack]:
    with tempfile.TemporaryDirectory(prefix="karma-bench-") as folder:
        async with _stack(Path(folder), in_memory=in_memory) as stack:
            yield stack


@asynccontextmanager
async def _stack(data_dir: Path, *, in_memory: bool) -> AsyncIterator[BenchStack]:
    # The API's per-key rate is not what is measured.
    settings = with_free_ports(Settings(api=ApiSettings(rate_limit="100000/second")), data_dir)
    registry = default_registry().extended([NoopExecutor])
    async with EmbeddedKarma(settings, persistent=not in_memory, registry=registry) as karma:
        bare_worker = Worker(
            karma.temporal,
            task_queue=BARE_QUEUE,
            workflows=[BareWorkflow],
            activities=[bare_activity],
            # The same runner as Karma's worker.
            workflow_runner=workflow_runner(settings.temporal.workflow_sandbox, "bench"),
        )
        sandboxed = settings.model_copy(deep=True)
        sandboxed.temporal.workflow_sandbox = True
        before_worker = ActionWorker(
            karma.temporal, sandboxed, registry=registry, task_queue=BEFORE_QUEUE
        )
        async with bare_worker, before_worker:
            yield BenchStack(karma, karma.client, karma.settings, uuid.uuid4().hex[:8])
