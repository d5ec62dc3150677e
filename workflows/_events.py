"""Event-driven actions: waiting for external events (buffered signals) until a timeout."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows._core import ActionCore, Ending, millis
from workflows._failures import classify, temporal_retry

with workflow.unsafe.imports_passed_through():
    from karma import names
    from karma.errors import ErrorInfo, ErrorType
    from karma.events import Envelope, TransitionAttrs
    from karma.executor import AwaitEvent, EventDecision, EventResult
    from karma.lifecycle import EventType
    from karma.workflow_io import (
        ExecutionPlan,
        HandleEventInput,
    )


class EventWaiting(ActionCore):
    """WAITING until `handle_event` judges an event final, or TIMED_OUT."""

    async def _wait_for_events(
        self, params: dict[str, Any], plan: ExecutionPlan, awaiting: AwaitEvent
    ) -> Ending:
        self._external_id = awaiting.external_workflow_id
        self._outputs = outputs = dict(awaiting.outputs)
        self._record(
            EventType.WAITING,
            TransitionAttrs(
                external_workflow_id=self._external_id,
                timeout_ms=millis(awaiting.timeout),
                outputs=outputs,
            ),
        )
        self._index_state()
        deadline = workflow.now() + awaiting.timeout
        await self._outbox.flush()  # the wait may be long: make WAITING visible now
        while True:
            if not self._inbox and not await self._event_before(deadline):
                return Ending(
                    EventType.TIMED_OUT,
                    outputs=outputs,
                    error=ErrorInfo(
                        type=ErrorType.TIMEOUT,
                        message=f"no completion for {self._external_id} within "
                        f"{awaiting.timeout.total_seconds():g}s",
                    ),
                )
            event = self._inbox.pop(0)
            judged = await self._judge(event, params, plan, outputs)
            if isinstance(judged, Ending):
                return judged
            if self._cancel_requested():  # it came while the event was being judged
                return self._cancelled(outputs)

    async def _event_before(self, deadline: datetime) -> bool:
        """Wait for an event until `deadline`; False if none came."""
        remaining = (deadline - workflow.now()).total_seconds()
        if remaining <= 0:
            return False
        try:
            await workflow.wait_condition(lambda: bool(self._inbox), timeout=remaining)
        except TimeoutError:
            return False
        return True

    async def _judge(
        self, event: Envelope, params: dict[str, Any], plan: ExecutionPlan, outputs: dict[str, Any]
    ) -> Ending | None:
        """Let the executor judge one event; an ending if it ends the action."""
        try:
            result: EventResult = await workflow.execute_activity(
                names.HANDLE_EVENT,
                HandleEventInput(
                    request=self._request,
                    params=params,
                    external_workflow_id=self._external_id,
                    event=event,
                    outputs=outputs,
                ),
                result_type=EventResult,
                start_to_close_timeout=plan.timeout,
                retry_policy=temporal_retry(plan.retry),
            )
        except ActivityError as err:
            error, _ = classify(err)
            if error.type is ErrorType.PAYLOAD_TOO_LARGE:
                # The executor's answer cannot enter the history: no later event can be
                # judged differently, so the action fails with the reason.
                return Ending(EventType.FAILED, outputs=outputs, error=error)
            # An event the executor cannot judge (malformed, from outside) must not end a
            # healthy action: it is ignored and the action keeps waiting.
            workflow.logger.warning(
                "ignored event %s: on_event failed: %s", event.event_id, error.message
            )
            return None
        match result.decision:
            case EventDecision.COMPLETE:
                outputs.update(result.outputs)
                if result.succeeded:
                    return Ending(EventType.SUCCEEDED, outputs=outputs)
                error = ErrorInfo(type=ErrorType.EXTERNAL, message=result.error or event.event_type)
                return Ending(EventType.FAILED, outputs=outputs, error=error)
            case EventDecision.UPDATE_PROGRESS:
                self._record(
                    EventType.PROGRESS,
                    TransitionAttrs(
                        percent=result.percent, message=result.message, event_id=event.event_id
                    ),
                )
                await self._outbox.flush()
            case EventDecision.IGNORE:
                workflow.logger.info("ignored event %s: %s", event.event_id, result.message)
        return None
