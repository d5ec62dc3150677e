"""The activities of ActionWorkflow: prepare (validate), execute (call the executor), emit.

`execute_action` also publishes the transitions the workflow has recorded so far, while the
executor runs, so a successful action needs no separate emission round trip before its
terminal event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities._phases import output_of, run_phase
from bridge.emit import TransitionPublisher
from karma import names
from karma.errors import (
    ErrorInfo,
    ErrorType,
    FieldError,
    KarmaError,
    PermanentError,
    TransientError,
    UnknownActionError,
    ValidationError,
)
from karma.executor import (
    ActionContext,
    BaseActionExecutor,
    EventContext,
    EventDrivenActionExecutor,
    EventResult,
)
from karma.meta import SUPPORTED_MODES
from karma.params import redact_params, validate_params
from karma.payload_size import check_result
from karma.registry import ActionRegistry
from karma.request import ActionRequest
from karma.saga import TransactionalActionExecutor
from karma.secrets import SecretSealer
from karma.settings import LimitsSettings
from karma.status import PastActions, ran_before
from karma.workflow_io import (
    EmitInput,
    EmitOutput,
    ExecuteFailure,
    ExecuteHeartbeat,
    ExecuteInput,
    ExecuteOutput,
    ExecutionPlan,
    HandleEventInput,
    PreparedAction,
)

log = logging.getLogger("karma.action")

HEARTBEATS_PER_TIMEOUT = 3
# Cancellation reaches an activity only through a heartbeat response, so heartbeats are
# also how fast a cancelled executor stops (the worker throttles to the same interval).
MAX_HEARTBEAT_INTERVAL = timedelta(seconds=2)


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
        past: PastActions | None = None,
    ) -> None:
        self._past = past
        self._registry = registry
        self._publisher = publisher
        self._sealer = sealer
        self._emit_timeout = emit_timeout
        self._max_payload_bytes = max_payload_bytes
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
        if meta.mode not in SUPPORTED_MODES:
            reason = f"execution mode {meta.mode.value!r} is not supported by this worker"
            error = ValidationError([FieldError(field="action_type", reason=reason)])
            return PreparedAction(
                prepared_at=now,
                requested_args=requested_args,
                error=ErrorInfo.from_exception(error),
            )
        try:
            params = validate_params(meta, self._sealer.unseal(request.params))
        except KarmaError as exc:
            return PreparedAction(
                prepared_at=now, requested_args=requested_args, error=ErrorInfo.from_exception(exc)
            )
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
                retry=meta.retry,
                timeout=meta.timeout,
                heartbeat_timeout=meta.heartbeat_timeout,
                output_names=[o.name for o in meta.outputs],
                steps=steps if issubclass(executor_class, TransactionalActionExecutor) else [],
                compensation_retry=compensation_retry,
                iterations_per_run=getattr(executor_class, "iterations_per_run", 100),
            ),
        )

    @activity.defn(name=names.EXECUTE_ACTION)
    async def execute_action(self, inp: ExecuteInput) -> ExecuteOutput:
        """Run one attempt of the executor; publish pending transitions meanwhile."""
        request = inp.request
        acked = ExecuteHeartbeat()
        emission = asyncio.ensure_future(self._emit(inp, acked))
        heartbeat = asyncio.ensure_future(heartbeat_forever(acked))
        try:
            executor = self._registry.executor(request.action_type)
            params = self._sealer.unseal(inp.params)
            result = await run_phase(executor, inp, self._context(inp, params))
            output = output_of(executor, result)
            check_result(output, output.outputs, self._max_payload_bytes, "the attempt's result")
        except Exception as exc:
            failure = ExecuteFailure(
                error=ErrorInfo.from_exception(exc), emitted_seq=await _settle(emission)
            )
            raise application_error(exc, failure) from exc
        except BaseException as exc:
            details = activity.cancellation_details()
            if not (
                isinstance(exc, asyncio.CancelledError) and details and details.cancel_requested
            ):
                emission.cancel()
                raise
            # The action is being cancelled. Say what Kafka acknowledged (a cancellation
            # carries no details), so the workflow does not publish those transitions again.
            raise _cancelled(await _settle(emission)) from exc
        finally:
            heartbeat.cancel()
        output.emitted_seq = await _settle(emission)
        return output

    @activity.defn(name=names.HANDLE_EVENT)
    async def handle_event(self, inp: HandleEventInput) -> EventResult:
        """Let the executor judge one external event (retried under the action's policy)."""
        try:
            executor = self._registry.executor(inp.request.action_type)
            ctx = EventContext(
                action_id=inp.request.action_id,
                action_type=inp.request.action_type,
                params=self._sealer.unseal(inp.params),
                external_workflow_id=inp.external_workflow_id,
                event=inp.event,
                outputs=inp.outputs,
                logger=logger_for(inp.request),
            )
            result = await _event_driven(executor).on_event(ctx)
            check_result(result, result.outputs, self._max_payload_bytes, "on_event's result")
        except Exception as exc:
            raise application_error(
                exc, ExecuteFailure(error=ErrorInfo.from_exception(exc))
            ) from exc
        return result

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

    def _context(self, inp: ExecuteInput, params: dict[str, Any]) -> ActionContext:
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
            step=inp.step,
            previous=inp.previous,
            decision=inp.decision,
            logger=logger_for(request),
        )

    async def _emit(self, inp: ExecuteInput, acked: ExecuteHeartbeat) -> int:
        acked.emitted_seq = await self._publisher.publish(inp.pending, timeout=self._emit_timeout)
        return acked.emitted_seq


def _event_driven(executor: BaseActionExecutor) -> EventDrivenActionExecutor:
    if not isinstance(executor, EventDrivenActionExecutor):
        raise PermanentError(f"{type(executor).__name__} does not handle events")
    return executor


def logger_for(request: ActionRequest) -> logging.LoggerAdapter[logging.Logger]:
    return logging.LoggerAdapter(
        log, {"action_id": request.action_id, "action_type": request.action_type}
    )


def application_error(exc: Exception, failure: ExecuteFailure) -> ApplicationError:
    error = failure.error
    return ApplicationError(
        error.message,
        failure,
        type=error.type.value,
        non_retryable=not error.retryable,
        next_retry_delay=_delay(exc),
        # A failure the executor raised on purpose is an expected outcome, not a worker
        # problem: keep it out of the worker's warning log and metrics.
        category=(
            ApplicationErrorCategory.BENIGN
            if isinstance(exc, KarmaError)
            else ApplicationErrorCategory.UNSPECIFIED
        ),
    )


def _cancelled(emitted_seq: int) -> ApplicationError:
    error = ErrorInfo(type=ErrorType.CANCELLED, message="cancelled on request")
    return ApplicationError(
        error.message,
        ExecuteFailure(error=error, emitted_seq=emitted_seq),
        type=error.type.value,
        non_retryable=True,
        category=ApplicationErrorCategory.BENIGN,
    )


async def _settle(emission: Awaitable[int]) -> int:
    """The seq Kafka acknowledged; a failed emission acknowledged nothing."""
    with contextlib.suppress(Exception):
        return await emission
    return 0


async def heartbeat_forever(acked: ExecuteHeartbeat) -> None:
    """Heartbeat so a lost worker is noticed within the heartbeat timeout and so
    cancellation reaches the executor; the details say what Kafka acknowledged."""
    timeout = activity.info().heartbeat_timeout or timedelta(seconds=30)
    interval = min(timeout / HEARTBEATS_PER_TIMEOUT, MAX_HEARTBEAT_INTERVAL).total_seconds()
    # Sleep first: an attempt that ends within one interval (most do) costs the server no
    # heartbeat at all.
    while True:
        await asyncio.sleep(interval)
        activity.heartbeat(acked)


def _delay(exc: Exception) -> timedelta | None:
    if isinstance(exc, TransientError) and exc.retry_after is not None:
        return timedelta(seconds=exc.retry_after)
    return None
