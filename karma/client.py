"""The client SDK: request actions, follow their transitions, deliver callbacks, cancel.

client = await KarmaClient.connect()
handle = await client.request("http_request", {"url": "https://example.com"})  # at once
async for transition in handle.transitions():  # as they happen
    print(transition.event_type)
outcome = await handle.result()  # the terminal state; failures are outcomes too
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError as PydanticValidationError
from temporalio.api.enums.v1 import WorkflowTaskFailedCause
from temporalio.client import (
    Client,
    Interceptor,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.exceptions import ApplicationError, CancelledError, WorkflowAlreadyStartedError
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError, RPCStatusCode

from karma import names, search_attributes
from karma.codec import EncryptionCodec
from karma.envelope import Envelope, Transition
from karma.errors import (
    ActionEndedError,
    ActionNotFoundError,
    ActionUnreadableError,
    DecisionRefusedError,
    ValidationError,
    field_errors,
)
from karma.ids import action_id_for_key, workflow_id_for
from karma.interactive import Decision, DecisionInput
from karma.params import validate_params
from karma.payload_size import check_event, check_request
from karma.registry import ActionRegistry, default_registry
from karma.request import ActionRequest
from karma.secrets import SecretSealer
from karma.settings import LimitsSettings, Settings, get_settings
from karma.status import ActionOutcome, ActionStatus, LedgerAnswer, PastActions, ran_before
from karma.telemetry import current_trace_id, tracer
from karma.web_ui import details, summary

if TYPE_CHECKING:
    from karma.pipelines.client import PipelineHandle
    from karma.pipelines.spec import PipelineSpec

T = TypeVar("T")

# How long `status` waits for a worker to answer before explaining why it did not.
QUERY_TIMEOUT = timedelta(seconds=10)


def data_converter(settings: Settings) -> DataConverter:
    codec = EncryptionCodec.from_settings(settings.codec)
    if codec is None:
        return pydantic_data_converter
    # Failure messages and stack traces are encrypted too (they can quote what failed).
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


@functools.cache
def sdk_runtime(host: str, port: int) -> Runtime:
    """The Temporal SDK's runtime with its Prometheus endpoint (one per process)."""
    return Runtime(
        telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"{host}:{port}"))
    )


async def connect_temporal(
    settings: Settings, *, interceptors: Sequence[Interceptor] = (), sdk_metrics: bool = False
) -> Client:
    """A Temporal client with Karma's data converter (every payload is a pydantic model),
    encrypting payloads when KARMA_CODEC__KEYS is set."""
    temporal = settings.temporal
    metrics = settings.metrics
    return await Client.connect(
        temporal.address,
        # The SDK's Prometheus endpoint: for the process running the worker only.
        runtime=(
            sdk_runtime(metrics.host, metrics.sdk_port)
            if sdk_metrics and metrics.sdk_port
            else None
        ),
        namespace=temporal.namespace,
        data_converter=data_converter(settings),
        api_key=temporal.api_key.get_secret_value() if temporal.api_key else None,
        tls=temporal.tls,
        interceptors=interceptors,
    )


class ActionHandle:
    """A reference to one action. `created` is False when the request matched an
    existing action (same idempotency key)."""

    def __init__(
        self,
        temporal: Client,
        action_id: str,
        *,
        created: bool = True,
        workflow_handle: WorkflowHandle[Any, Any] | None = None,
        max_payload_bytes: int = LimitsSettings().max_payload_bytes,
        past: PastActions | None = None,
    ) -> None:
        self.action_id = action_id
        self.workflow_id = workflow_id_for(action_id)
        self.created = created
        self._converter = temporal.data_converter
        self._max_payload_bytes = max_payload_bytes
        self._past = past
        # Prefer the handle start_workflow returned: client interceptors may have adapted it.
        self._handle = workflow_handle or temporal.get_workflow_handle(self.workflow_id)

    async def _call(self, rpc: Awaitable[T]) -> T:
        """Temporal's answer, with its "not found" as ActionNotFoundError (the one place
        that translates it)."""
        try:
            return await rpc
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise ActionNotFoundError(self.action_id) from exc
            raise

    async def status(self) -> ActionStatus:
        """The action's state; from the ledger when Temporal no longer holds it."""
        try:
            status: ActionStatus = await self._call(
                self._handle.query(
                    names.STATUS_QUERY, result_type=ActionStatus, rpc_timeout=QUERY_TIMEOUT
                )
            )
        except ActionNotFoundError:
            return (await self._from_ledger()).status()
        except RPCError as exc:
            if exc.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
                # Our rpc_timeout ran out (reported as CANCELLED by the client).
                raise ActionUnreadableError(await self._why_silent()) from exc
            raise
        except WorkflowQueryFailedError as exc:
            raise ActionUnreadableError(
                f"action {self.action_id} cannot answer its status query: {exc}"
            ) from exc
        if not status.transitions:
            # Nothing recorded yet: a query can be answered from a first workflow task
            # that keeps failing (it never completes), which must not look like "REQUESTED".
            # Every workflow task that completes has recorded REQUESTED, so any failure in
            # the history counts here, even one a task completed after (a task that only
            # reported a local activity's progress).
            failing = await self._task_failure(after_completions=True)
            if failing:
                raise ActionUnreadableError(failing)
        return status

    async def _task_failure(self, *, after_completions: bool = False) -> str:
        """Why the workflow cannot run, if its last workflow task failed (or any did, with
        `after_completions`)."""
        failure, failing = "", False
        async for event in self._handle.fetch_history_events():
            if event.HasField("workflow_task_failed_event_attributes"):
                attributes = event.workflow_task_failed_event_attributes
                failing = True
                message = attributes.failure.message
                if attributes.failure.HasField("encoded_attributes"):  # encrypted
                    with contextlib.suppress(Exception):  # a key we lack: its placeholder
                        decoded = await self._converter.decode_failure(attributes.failure)
                        message = str(decoded)
                # Keep the most telling reason: later failures can carry no message.
                failure = (
                    message
                    or failure
                    or (f"cause {WorkflowTaskFailedCause.Name(attributes.cause)}")
                )
            elif (
                event.HasField("workflow_task_completed_event_attributes") and not after_completions
            ):
                failure, failing = "", False
        if failing:
            return (
                f"action {self.action_id} cannot run: its workflow task keeps failing "
                f"({failure[:300]})"
            )
        return ""

    async def _why_silent(self) -> str:
        """Why the workflow did not answer: its last workflow task failure, if any."""
        failing = await self._task_failure()
        if failing:
            return failing
        return (
            f"action {self.action_id} did not answer within {QUERY_TIMEOUT.total_seconds():g}s: "
            "is a worker polling its task queue?"
        )

    async def _from_ledger(self) -> LedgerAnswer:
        """Temporal does not have it: the ledger may still (or it does not exist)."""
        events = await self._past(self.action_id) if self._past is not None else []
        if not events:
            raise ActionNotFoundError(self.action_id)
        return LedgerAnswer(transitions=list(events))

    async def result(self) -> ActionOutcome:
        """Wait for the terminal state; failures and cancellations are outcomes, not errors."""
        try:
            return ActionOutcome.model_validate(await self._call(self._handle.result()))
        except ActionNotFoundError:
            return (await self._from_ledger()).outcome()
        except WorkflowFailureError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.details:
                return ActionOutcome.model_validate(cause.details[0])
            if isinstance(cause, CancelledError):
                return ActionOutcome.of(await self.status())
            raise

    async def cancel(self) -> None:
        await self._call(self._handle.cancel())

    async def workflow_closed(self) -> bool:
        """Whether Temporal says the action's workflow has closed (answered by the server,
        no worker needed).

        Raises:
            karma.errors.ActionNotFoundError: Temporal does not hold it.
        """
        description = await self._call(self._handle.describe())
        return description.status not in (None, WorkflowExecutionStatus.RUNNING)

    async def callback(self, event: Envelope | Mapping[str, Any]) -> Envelope:
        """Deliver a callback to the action (as the ingress does for `actions.events`).

        `ts` defaults to now and `event_id` to a fresh id; the action ignores an event_id it
        has already seen. Returns the event as delivered.

        Raises:
            karma.errors.ValidationError: the event is not a valid envelope or is too large.
            karma.errors.ActionNotFoundError: no such action.
            karma.errors.ActionEndedError: the action has ended.
        """
        if isinstance(event, Envelope):
            envelope = event
        else:
            try:
                envelope = Envelope.model_validate({"ts": datetime.now(UTC), **event})
            except PydanticValidationError as exc:
                raise ValidationError(field_errors(exc)) from exc
        if not envelope.event_id:
            envelope = envelope.model_copy(update={"event_id": f"signal:{uuid.uuid4().hex}"})
        check_event(envelope, self._max_payload_bytes)
        try:
            await self._call(self._handle.signal(names.DELIVER_CALLBACK_SIGNAL, envelope))
        except ActionNotFoundError as exc:
            await self._call(self._handle.describe())  # not found at all, or ended?
            raise ActionEndedError(self.action_id, "it takes no more callbacks") from exc
        return envelope

    async def decide(self, decision: str, *, by: str, reason: str = "") -> Decision:
        """Approve or reject an interactive action that waits for a decision.

        Raises:
            karma.errors.DecisionRefusedError: not waiting for a decision, or a bad decision
                (unknown verdict, no `by`, a rejection without a reason); nothing changed.
            karma.errors.ActionNotFoundError: no such action.
        """
        try:
            decided: Decision = await self._call(
                self._handle.execute_update(
                    names.DECIDE_UPDATE,
                    DecisionInput(decision=decision, by=by, reason=reason),
                    result_type=Decision,
                )
            )
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause or exc)
            raise DecisionRefusedError(message) from exc
        except ActionNotFoundError as exc:
            await self._call(self._handle.describe())  # not found at all, or ended?
            raise DecisionRefusedError(
                f"action {self.action_id} is not waiting for a decision (it has ended)"
            ) from exc
        return decided

    async def approve(self, *, by: str, reason: str = "") -> Decision:
        return await self.decide("approve", by=by, reason=reason)

    async def reject(self, *, by: str, reason: str) -> Decision:
        return await self.decide("reject", by=by, reason=reason)

    async def transitions(self, *, poll_interval: float = 0.5) -> AsyncIterator[Transition]:
        """Yield transitions as they are recorded, from the first to the terminal one.

        A stateful action's status holds only its current run's transitions (its history is
        bounded by continue-as-new): earlier ones are in the ledger.
        """
        last_seq = 0
        while True:
            status = await self.status()
            for event in status.transitions:
                if event.seq > last_seq:
                    last_seq = event.seq
                    yield event
            if status.state.is_terminal:
                return
            await asyncio.sleep(poll_interval)


class KarmaClient:
    """Requests actions through Temporal; validates them locally first."""

    def __init__(
        self,
        temporal: Client,
        *,
        task_queue: str = names.DEFAULT_TASK_QUEUE,
        registry: ActionRegistry | None = None,
        search_attributes: bool = True,
        sealer: SecretSealer | None = None,
        limits: LimitsSettings | None = None,
        past: PastActions | None = None,
    ) -> None:
        self.temporal = temporal
        self.task_queue = task_queue
        self._registry = registry
        self._index = search_attributes
        self._sealer = sealer
        self._past = past
        self._max_payload_bytes = (limits or LimitsSettings()).max_payload_bytes

    @classmethod
    async def connect(
        cls, settings: Settings | None = None, *, past: PastActions | None = None
    ) -> KarmaClient:
        """Connect with `settings` (default: KARMA_* variables). `past` reads the ledger
        (see `submit`)."""
        settings = settings or get_settings()
        from karma.telemetry import tracing_interceptors

        temporal = await connect_temporal(
            settings, interceptors=tracing_interceptors(settings.otel)
        )
        return cls(
            temporal,
            task_queue=settings.temporal.task_queue,
            search_attributes=settings.temporal.search_attributes,
            sealer=SecretSealer.from_settings(settings),
            limits=settings.limits,
            past=past,
        )

    @property
    def registry(self) -> ActionRegistry:
        if self._registry is None:
            self._registry = default_registry()
        return self._registry

    async def start_pipeline(
        self,
        spec: PipelineSpec,
        params: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str = "",
        entity_id: str = "",
        tenant: str = "",
        tags: Mapping[str, str] | None = None,
        saved_plan: Mapping[str, Any] | None = None,
    ) -> PipelineHandle:
        """Check a pipeline against this client's registry and start it.

        Raises:
            karma.errors.ValidationError: the spec, its params, or a saved plan that no
                longer matches (PlanOutdatedError); nothing is started.
        """
        from karma.pipelines import client as pipelines

        request = pipelines.prepare(
            spec, self.registry, params or {}, sealer=self._sealer,
            idempotency_key=idempotency_key, entity_id=entity_id, tenant=tenant,
            tags=tags, saved_plan=saved_plan,
        )  # fmt: skip
        return await pipelines.start(
            self.temporal, request, task_queue=self.task_queue, index=self._index
        )

    def pipeline(self, pipeline_id: str) -> PipelineHandle:
        from karma.pipelines.client import PipelineHandle

        return PipelineHandle(self.temporal, pipeline_id, created=False)

    async def request(
        self,
        action_type: str,
        params: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str = "",
        entity_id: str = "",
        correlation_id: str = "",
        tenant: str = "",
        priority: str = "normal",
        tags: Mapping[str, str] | None = None,
        validate: bool = True,
        task_queue: str | None = None,
    ) -> ActionHandle:
        """Start an action and return its handle at once.

        Raises:
            karma.errors.ValidationError: unknown type, bad parameters or ids, or a request
                too large for Temporal (nothing is started).
        """
        request = ActionRequest.new(
            action_type,
            params,
            idempotency_key=idempotency_key,
            entity_id=entity_id,
            correlation_id=correlation_id,
            tenant=tenant,
            priority=priority,
            tags=tags,
        )
        return await self.submit(request, validate=validate, task_queue=task_queue)

    async def submit(
        self, request: ActionRequest, *, validate: bool = True, task_queue: str | None = None
    ) -> ActionHandle:
        """Start a prepared request (see `_submit`) in its own span, which starts the
        action's trace when tracing is on (its id is stamped on every transition)."""
        attributes = {
            "karma.action_id": request.action_id,
            "karma.action_type": request.action_type,
        }
        with tracer().start_as_current_span(
            f"karma.request {request.action_type}", attributes=attributes
        ):
            trace_id = current_trace_id()  # "" unless this span is recorded
            if trace_id and not request.trace_id:
                request = request.model_copy(update={"trace_id": trace_id})
            return await self._submit(request, validate=validate, task_queue=task_queue)

    async def _submit(
        self, request: ActionRequest, *, validate: bool, task_queue: str | None
    ) -> ActionHandle:
        """Start a prepared request; a second request with the same action id returns the
        existing action's handle (`created=False`), it never runs twice: while Temporal
        holds the action's workflow, and after that for as long as the ledger holds its
        transitions (when this client can read the ledger: `past`; otherwise the worker
        answers the request from the ledger).

        Secret parameters are sealed here, so only the executor ever sees them in clear.

        Raises:
            karma.errors.ValidationError: as for `request`.
        """
        if validate:
            validate_params(self.registry.meta(request.action_type), request.params)
        if self._sealer is not None and request.action_type in self.registry:
            meta = self.registry.meta(request.action_type)
            request = request.model_copy(update={"params": self._sealer.seal(meta, request.params)})
        check_request(request, request.params, self._max_payload_bytes)
        if request.idempotency_key and await ran_before(self._past, request.action_id):
            return self.handle(request.action_id, created=False)
        earlier = await self._before_tenant_scoping(request)
        if earlier is not None:
            return self.handle(earlier, created=False)
        try:
            started = await self.temporal.start_workflow(
                names.ACTION_WORKFLOW,
                request,
                id=workflow_id_for(request.action_id),
                task_queue=task_queue or self.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=search_attributes.initial(request) if self._index else None,
                static_summary=summary(request),
                static_details=details(request),
            )
        except WorkflowAlreadyStartedError:
            return self.handle(request.action_id, created=False)
        return ActionHandle(
            self.temporal,
            request.action_id,
            workflow_handle=started,
            max_payload_bytes=self._max_payload_bytes,
            past=self._past,
        )

    async def _before_tenant_scoping(self, request: ActionRequest) -> str | None:
        """The action a tenant's idempotency key named before keys were scoped by tenant
        (its id did not include the tenant): a retry of a request made before the upgrade
        answers with that action instead of running a second one."""
        if not (request.tenant and request.idempotency_key):
            return None
        action_id = action_id_for_key(request.idempotency_key)
        try:
            described = await self.temporal.get_workflow_handle(
                workflow_id_for(action_id)
            ).describe()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
        else:
            tenant = described.typed_search_attributes.get(search_attributes.TENANT)
            if tenant is None and not self._index:  # not indexed: its transitions say
                try:
                    status = await self.handle(action_id).status()
                except ActionUnreadableError:
                    return None  # cannot tell: not a reason to refuse this request
                tenant = status.tenant
            return action_id if (tenant or "") == request.tenant else None
        known = await ran_before(self._past, action_id)
        if known and known[0].tags.get("tenant") == request.tenant:
            return action_id
        return None

    def handle(self, action_id: str, *, created: bool = True) -> ActionHandle:
        return ActionHandle(
            self.temporal,
            action_id,
            created=created,
            max_payload_bytes=self._max_payload_bytes,
            past=self._past,
        )
