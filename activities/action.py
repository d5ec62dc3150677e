"""The activities of ActionWorkflow: prepare (validate), one per executor method (execute,
ask, run_step, iterate, handle_callback), and emit.

Each attempt also publishes the transitions the workflow has recorded so far, while the
executor runs, so a successful action needs no separate emission round trip before its
terminal event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from temporalio import activity

from activities import _methods
from activities._attempt import AttemptClock, application_error, logger_for, run_attempt
from bridge.emit import TransitionPublisher
from karma import metrics, names
from karma.credentials import CredentialManager
from karma.errors import (
    ErrorInfo,
    FieldError,
    KarmaError,
    PermanentError,
    TransientError,
    UnknownActionError,
    ValidationError,
)
from karma.executor import (
    KIND_BASES,
    ActionContext,
    BaseActionExecutor,
    CallbackContext,
    EventDrivenActionExecutor,
)
from karma.meta import ActionMeta
from karma.params import redact_params, render_templates, validate_params
from karma.payload_size import check_output_limit, check_result
from karma.refs import resolve_refs
from karma.registry import ActionRegistry
from karma.request import ActionRequest
from karma.resources import ResourceManager
from karma.result_cache import ResultCache, cache_key, look_up
from karma.saga import StepContext, TransactionalActionExecutor
from karma.secrets import SecretSealer
from karma.settings import LimitsSettings
from karma.status import PastActions, ran_before
from karma.streaming import STREAM_SINK, ItemSink, StreamingActionExecutor
from karma.workflow_io import (
    AskInput,
    AskOutput,
    AttemptOutput,
    CallbackInput,
    EmitInput,
    EmitOutput,
    ExecuteHeartbeat,
    ExecuteInput,
    ExecuteOutput,
    ExecutionPlan,
    IterateInput,
    IterateOutput,
    JudgedCallback,
    LegacyExecuteInput,
    Phase,
    PreparedAction,
    StepInput,
    StepOutput,
)

Out = TypeVar("Out", bound=AttemptOutput)
REF_CHECK_ATTEMPTS = 4  # of prepare_action, while a resolver's system cannot answer
# prepare_action has 30 s: references 10 + a renderer 3 + rendering 8 + the cache 3.
REF_CHECK_TIMEOUT_S = 10.0  # for all of an action's references


async def _resolved(
    meta: ActionMeta, params: dict[str, Any], services: Mapping[str, str]
) -> dict[str, Any]:
    """The params with references resolved, within REF_CHECK_TIMEOUT_S."""
    try:
        async with asyncio.timeout(REF_CHECK_TIMEOUT_S):
            return await resolve_refs(meta, params, services)
    except TimeoutError:
        raise TransientError(
            f"the references could not be checked within {REF_CHECK_TIMEOUT_S:g} s"
        ) from None


def template_context(request: ActionRequest) -> dict[str, Any]:
    """What a TEMPLATE param reads besides `params`."""
    return {
        "action_id": request.action_id,
        "action_type": request.action_type,
        "entity_id": request.entity_id,
        "correlation_id": request.correlation_id,
        "tags": request.event_tags,
        "steps": {},
        **(request.template_context or {}),
    }


class ActionActivities:
    """Activities bound to one worker's registry and Kafka publisher."""

    def __init__(
        self,
        registry: ActionRegistry,
        publisher: TransitionPublisher,
        sealer: SecretSealer,
        *,
        emit_timeout: float,
        callback_topic: str,
        services: Mapping[str, str],
        max_payload_bytes: int = LimitsSettings().max_payload_bytes,
        limits: LimitsSettings | None = None,
        past: PastActions | None = None,
        resources: ResourceManager | None = None,
        stream: ItemSink | None = None,
        cache: ResultCache | None = None,
        credentials: CredentialManager | None = None,
    ) -> None:
        self._credentials = credentials
        self._past = past
        self._cache = cache
        self._resources = resources
        self._stream = stream
        self._registry = registry
        self._publisher = publisher
        self._sealer = sealer
        self._emit_timeout = emit_timeout
        self._max_payload_bytes = max_payload_bytes
        self._limits = limits or LimitsSettings(max_payload_bytes=max_payload_bytes)
        self._callback_topic = callback_topic
        self._services = dict(services)

    @activity.defn(name=names.PREPARE_ACTION)
    async def prepare_action(self, request: ActionRequest) -> PreparedAction:
        """Validate a request against the worker's registry. Never raises for bad input:
        the workflow records the validation failure as a transition.

        A request with an idempotency key whose action the ledger already holds (its
        workflow is past Temporal's retention) is answered from the ledger instead: nothing
        of this run has been published yet, so any transition there is an earlier run's.
        """
        now = datetime.now(UTC)
        if request.idempotency_key and request.resume is None:
            earlier = await ran_before(self._past, request.action_id)
            if earlier:
                return PreparedAction(prepared_at=now, ran_before=earlier)
        try:
            meta = self._registry.meta(request.action_type)
        except UnknownActionError as exc:
            return PreparedAction(
                prepared_at=now,
                requested_args=redact_params(None, request.params),
                error=ErrorInfo.from_exception(exc),
            )
        requested_args = redact_params(meta, request.params)
        if meta.mode not in KIND_BASES:
            reason = f"execution mode {meta.mode.value!r} is not supported by this worker"
            error = ValidationError([FieldError(field="action_type", reason=reason)])
            return PreparedAction(
                prepared_at=now,
                requested_args=requested_args,
                error=ErrorInfo.from_exception(error),
            )
        try:
            carried = request.resume is not None and request.params_prepared
            params = validate_params(meta, self._sealer.unseal(request.params), rendered=carried)
            if not carried:  # a continued run carries the params its first run prepared
                params = await _resolved(meta, params, self._services)
                params = await render_templates(meta, params, template_context(request))
        except TransientError as exc:
            # A resolver's system cannot answer, or the template renderer cannot run now:
            # retried with this local activity a few times, then the action fails (it
            # must not sit unseen before REQUESTED).
            if activity.info().attempt < REF_CHECK_ATTEMPTS:
                raise
            return PreparedAction(
                prepared_at=now, requested_args=requested_args, error=ErrorInfo.from_exception(exc)
            )
        except KarmaError as exc:
            return PreparedAction(
                prepared_at=now, requested_args=requested_args, error=ErrorInfo.from_exception(exc)
            )
        key = (
            cache_key(self._sealer, meta, params, request.tenant)
            if meta.cache_ttl is not None
            else None
        )
        cached = None
        if key is not None and request.resume is None:  # a continued run is no new request
            cached = await look_up(self._cache, meta, key, now)
        executor_class = self._registry.get(request.action_type).executor_class
        steps = list(getattr(executor_class, "steps", ()))
        compensation_retry = getattr(executor_class, "compensation_retry", None)
        return PreparedAction(
            prepared_at=now,
            params=self._sealer.seal(meta, params),
            requested_args=requested_args,
            accepted_args=redact_params(meta, params),
            plan=ExecutionPlan(
                mode=meta.mode,
                meta_version=meta.version,
                retry=meta.retry
                if request.max_attempts is None
                else meta.retry.model_copy(update={"max_attempts": request.max_attempts}),
                timeout=meta.timeout,
                heartbeat_timeout=meta.heartbeat_timeout,
                output_names=[o.name for o in meta.outputs],
                steps=steps if issubclass(executor_class, TransactionalActionExecutor) else [],
                compensation_retry=compensation_retry,
                iterations_per_run=getattr(executor_class, "iterations_per_run", 100),
                cache_key=key,
            ),
            cached=cached,
        )

    @activity.defn(name=names.EXECUTE)
    async def execute(self, inp: ExecuteInput) -> ExecuteOutput:
        """One attempt of `execute`; the pending transitions are published meanwhile."""
        return await self._attempt(inp, lambda x, ctx: _methods.execute(x, ctx))

    @activity.defn(name=names.ASK)
    async def ask(self, inp: AskInput) -> AskOutput:
        """One attempt of an interactive executor's `ask`."""
        return await self._attempt(inp, lambda x, ctx: _methods.ask(x, ctx))

    @activity.defn(name=names.RUN_STEP)
    async def run_step(self, inp: StepInput) -> StepOutput:
        """One attempt of one step of a transactional executor."""
        return await self._attempt(
            inp,
            lambda x, ctx: _methods.run_step(
                x, StepContext(**vars(ctx), step=inp.step, previous=inp.previous)
            ),
        )

    @activity.defn(name=names.ITERATE)
    async def iterate(self, inp: IterateInput) -> IterateOutput:
        """One iteration of a stateful executor."""
        return await self._attempt(inp, lambda x, ctx: _methods.iterate(x, ctx, inp, self._limits))

    @activity.defn(name=names.EXECUTE_ACTION)
    async def execute_action(self, inp: LegacyExecuteInput) -> AttemptOutput:
        """The one activity of workflows started before each executor method had its own
        (they still call it when they run on): routed by phase."""
        common = inp.model_dump(include={"request", "params", "attempt", "pending"})
        match inp.phase:
            case Phase.ASK:
                return await self.ask(AskInput(**common))
            case Phase.STEP:
                return await self.run_step(
                    StepInput(**common, step=inp.step, previous=inp.previous)
                )
            case Phase.ITERATE:
                return await self.iterate(
                    IterateInput(**common, state=inp.state, state_version=inp.state_version)
                )
        return await self.execute(ExecuteInput(**common, decision=inp.decision))

    async def _attempt(
        self,
        inp: ExecuteInput | AskInput | StepInput | IterateInput,
        method: Callable[[BaseActionExecutor, ActionContext], Awaitable[Out]],
    ) -> Out:
        async def call() -> Out:
            executor = self._registry.executor(inp.request.action_type)
            meta = self._registry.meta(inp.request.action_type)
            needed = meta.required_services
            # An unhealthy resource fails the attempt as transient: retried, never run.
            resources = await self._resources.acquire(needed) if self._resources else {}
            if isinstance(executor, StreamingActionExecutor) and self._stream is not None:
                resources[STREAM_SINK] = self._stream
            ctx = self._context(inp, self._sealer.unseal(inp.params), resources)
            output = await method(executor, ctx)
            check_output_limit(meta, output.outputs)
            return output

        async def emit(acked: ExecuteHeartbeat) -> int:
            acked.emitted_seq = await self._publisher.publish(
                inp.pending, timeout=self._emit_timeout
            )
            return acked.emitted_seq

        began = time.monotonic()
        outcome = "error"
        try:
            result = await run_attempt(call, emit, max_payload_bytes=self._max_payload_bytes)
            outcome = "ok"
            return result
        finally:
            metrics.ATTEMPTS.labels(
                inp.request.action_type, activity.info().activity_type, outcome
            ).observe(time.monotonic() - began)

    @activity.defn(name=names.HANDLE_CALLBACK)
    async def handle_callback(self, inp: CallbackInput) -> JudgedCallback:
        """Let the executor judge one callback (retried under the action's policy)."""
        clock = AttemptClock()
        try:
            executor = self._registry.executor(inp.request.action_type)
            ctx = CallbackContext(
                action_id=inp.request.action_id,
                action_type=inp.request.action_type,
                params=self._sealer.unseal(inp.params),
                external_workflow_id=inp.external_workflow_id,
                callback=inp.event,
                outputs=inp.outputs,
                logger=logger_for(inp.request),
            )
            result = await _event_driven(executor).on_callback(ctx)
            check_result(result, result.outputs, self._max_payload_bytes, "on_callback's result")
            check_output_limit(self._registry.meta(inp.request.action_type), result.outputs)
        except Exception as exc:
            raise application_error(exc, clock) from exc
        return JudgedCallback(**result.model_dump(), judged_at=clock.now())

    @activity.defn(name=names.HANDLE_EVENT)
    async def handle_event(self, inp: CallbackInput) -> JudgedCallback:
        """`handle_callback` under the name runs started before still call it."""
        return await self.handle_callback(inp)

    @activity.defn(name=names.EMIT_TRANSITIONS)
    async def emit_transitions(self, inp: EmitInput) -> EmitOutput:
        """Publish transitions; fails (and is retried) until Kafka acknowledged all of them."""
        emitted = await self._publisher.publish(inp.events, timeout=self._emit_timeout)
        last = inp.events[-1].seq if inp.events else 0
        if emitted < last:
            raise TransientError(
                f"Kafka acknowledged transitions up to seq {emitted} of {last}; will retry"
            )
        return EmitOutput(emitted_seq=emitted)

    def _context(
        self,
        inp: ExecuteInput | AskInput | StepInput | IterateInput,
        params: dict[str, Any],
        resources: Mapping[str, Any] | None = None,
    ) -> ActionContext:
        request = inp.request
        return ActionContext(
            action_id=request.action_id,
            action_type=request.action_type,
            params=params,
            attempt=inp.attempt,
            tags=request.event_tags,
            entity_id=request.entity_id,
            correlation_id=request.correlation_id,
            idempotency_key=request.idempotency_key,
            callback_topic=self._callback_topic,
            services=self._services,
            decision=inp.decision if isinstance(inp, ExecuteInput) else None,
            logger=logger_for(request),
            resources=dict(resources or {}),
            credentials=self._credentials,
        )


def _event_driven(executor: BaseActionExecutor) -> EventDrivenActionExecutor:
    if not isinstance(executor, EventDrivenActionExecutor):
        raise PermanentError(f"{type(executor).__name__} does not handle events")
    return executor
