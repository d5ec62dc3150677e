"""Assembling the worker that runs ActionWorkflow and its activities."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities._attempt import MAX_HEARTBEAT_INTERVAL
from activities.action import ActionActivities
from activities.compensation import CompensationActivities
from bridge.dlq import DeadLetterPublisher
from bridge.emit import TransitionPublisher
from bridge.ledger import PastActions as LedgerReader
from bridge.stream_sink import StreamSink
from karma.breakers import BREAKERS
from karma.component import Component
from karma.credentials import CredentialManager
from karma.registry import ActionRegistry, default_registry
from karma.resources import ResourceManager
from karma.secrets import SecretSealer
from karma.settings import Settings
from karma.status import PastActions
from karma.telemetry import tracing_interceptors
from workflows.action import ActionWorkflow
from workflows.pipeline import PipelineWorkflow

# The sandbox re-imports every module that is not passed through for every workflow run,
# and recompiles it where bytecode is not cached (PYTHONDONTWRITEBYTECODE): for
# ActionWorkflow that was a quarter of the worker's CPU. `karma` and `workflows` hold only
# deterministic code (replay tests guard it); calls through sandbox-imported modules are
# still checked at run time.
PASSTHROUGH_MODULES = ("karma", "workflows", "pydantic", "pydantic_core", "annotated_types")


def workflow_runner(sandbox: bool, *extra_passthrough: str) -> WorkflowRunner:
    """The sandbox, or none: ActionWorkflow runs only Karma's own deterministic code (no
    executor runs in a workflow), which stored histories replay in the tests, sandboxed."""
    return sandboxed_runner(*extra_passthrough) if sandbox else UnsandboxedWorkflowRunner()


def sandboxed_runner(*extra_passthrough: str) -> SandboxedWorkflowRunner:
    restrictions = SandboxRestrictions.default.with_passthrough_modules(
        *PASSTHROUGH_MODULES, *extra_passthrough
    )
    return SandboxedWorkflowRunner(restrictions=restrictions)


def defined_activities(holder: object) -> list[Callable[..., Any]]:
    """Every `@activity.defn` method of `holder`: a new activity needs no line here."""
    methods = (getattr(holder, name) for name in dir(holder) if not name.startswith("__"))
    return [m for m in methods if callable(m) and hasattr(m, "__temporal_activity_definition")]


def _traced(client: Client) -> bool:
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return any(isinstance(i, TracingInterceptor) for i in client.config()["interceptors"])


class ActionWorker(Component):
    """A Temporal worker for ActionWorkflow plus the Kafka publisher its activities use."""

    def __init__(
        self,
        client: Client,
        settings: Settings,
        *,
        registry: ActionRegistry | None = None,
        task_queue: str | None = None,
        past: PastActions | None = None,
    ) -> None:
        self.task_queue = task_queue or settings.temporal.task_queue
        self._publisher = TransitionPublisher(settings.kafka)
        self._dlq = DeadLetterPublisher(settings.kafka)
        self._stream = StreamSink(settings.kafka)  # streaming actions' items
        BREAKERS.configure(settings.breakers)  # the calls its executors make
        registry = registry or default_registry()
        self.resources = ResourceManager.for_worker(
            settings.services,
            check_interval_s=settings.resources.check_interval_s,
            kafka=settings.kafka,
        )
        # The result cache's own ledger reader: a slow lookup never holds up the idempotency
        # check (closed with the worker).
        self._cache_reader = past.sibling() if isinstance(past, LedgerReader) else None
        sealer = SecretSealer.from_settings(settings)
        credentials = CredentialManager.of(settings)  # one token cache for steps and undos
        compensation = CompensationActivities(registry, sealer, self._dlq, credentials)
        activities = ActionActivities(
            registry,
            self._publisher,
            sealer,
            emit_timeout=settings.kafka.emit_timeout_s,
            callback_topic=settings.kafka.topics.callbacks,
            services=settings.services,
            max_payload_bytes=settings.limits.max_payload_bytes,
            limits=settings.limits,
            past=past,
            cache=self._cache_reader,
            resources=self.resources,
            stream=self._stream,
            credentials=credentials,
        )
        self._worker = Worker(
            client,
            task_queue=self.task_queue,
            workflows=[ActionWorkflow, PipelineWorkflow],
            activities=[*defined_activities(activities), *defined_activities(compensation)],
            workflow_runner=workflow_runner(settings.temporal.workflow_sandbox),
            # The client's tracing interceptor serves the worker too: never twice.
            interceptors=[] if _traced(client) else tracing_interceptors(settings.otel),
            graceful_shutdown_timeout=timedelta(seconds=5),
            max_heartbeat_throttle_interval=MAX_HEARTBEAT_INTERVAL,
            default_heartbeat_throttle_interval=MAX_HEARTBEAT_INTERVAL,
        )
        self._task: asyncio.Task[None] | None = None

    async def _start(self) -> None:
        await self._publisher.start()
        self._task = asyncio.create_task(self._worker.run(), name=f"worker:{self.task_queue}")

    async def _stop(self) -> None:
        if self._task is not None:
            await self._worker.shutdown()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.resources.close()
        if self._cache_reader is not None:
            await asyncio.to_thread(self._cache_reader.close)
        await self._stream.stop()
        await self._publisher.stop()
        await self._dlq.stop()

    async def wait(self) -> None:
        """Return when the worker stops by itself (a fatal error is raised here).
        Cancelling the wait leaves the worker running."""
        if self._task is not None:
            await asyncio.shield(self._task)
