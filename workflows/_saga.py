"""Transactional actions: steps in order, compensated in reverse when one fails or on cancel."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows._core import ActionCore, Ending
from workflows._failures import classify, temporal_retry
from workflows._outbox import DURABLE_EMIT_RETRY

with workflow.unsafe.imports_passed_through():
    from karma import names
    from karma.errors import ErrorInfo, ErrorType
    from karma.events import TransitionAttrs
    from karma.lifecycle import EventType
    from karma.workflow_io import (
        CompensateInput,
        ExecutionPlan,
        Phase,
        UndoneReport,
        UndoneStep,
    )


class Saga(ActionCore):
    """Steps, and the rollback that neither cancellation nor a lost worker interrupts."""

    async def _saga(self, params: dict[str, Any], plan: ExecutionPlan) -> Ending:
        """Run the steps in order; on a failed step or a cancellation, undo the completed
        ones in reverse order and end with the original error."""
        done: list[UndoneStep] = []
        outputs: dict[str, Any] = {}
        cancelled = False
        try:
            for index, step in enumerate(plan.steps):
                result = await self._attempts(
                    params, plan, phase=Phase.STEP, step=step, previous=outputs
                )
                if isinstance(result, Ending):
                    return await self._compensate(params, plan, done, result)
                if result.skipped is not None:
                    outputs.update(result.outputs)
                    return Ending(EventType.SKIPPED, outputs=outputs, reason=result.skipped)
                done.append(UndoneStep(step=step, compensation=result.compensation))
                outputs.update(result.outputs)
                self._outputs = dict(outputs)
                self._record(
                    EventType.PROGRESS,
                    TransitionAttrs(
                        step=step,
                        percent=round(100 * (index + 1) / len(plan.steps), 1),
                        message=f"step {step} done",
                    ),
                )
                if index + 1 < len(plan.steps) and self._cancel_requested():
                    # The cancellation arrived while this step finished anyway: start no
                    # further step, undo this one too.
                    cancelled = True
                    break
        except asyncio.CancelledError:
            cancelled = True
        if cancelled:
            return await self._compensate(params, plan, done, self._cancelled(outputs))
        return Ending(EventType.SUCCEEDED, outputs=outputs)

    async def _compensate(
        self, params: dict[str, Any], plan: ExecutionPlan, done: list[UndoneStep], ending: Ending
    ) -> Ending:
        """Undo `done` in reverse; a rollback is not itself cancellable."""
        if not done:
            return ending
        self._record(
            EventType.COMPENSATING,
            TransitionAttrs(error=ending.error, message=f"undoing {len(done)} step(s)"),
        )
        self._index_state()
        for index in reversed(range(len(done))):
            step = done[index]
            failure = await self._compensate_step(params, plan, step, ending.error)
            self._record(
                EventType.STEP_COMPENSATED,
                TransitionAttrs(
                    step=step.step,
                    outcome="failed" if failure else "compensated",
                    error=failure,
                ),
            )
            if failure is None:
                self._compensated.append(step.step)
                continue
            undone = done[: index + 1]
            names_undone = [u.step for u in undone]
            cause = ending.error.message if ending.error else ending.event_type.value
            error = ErrorInfo(
                type=ErrorType.COMPENSATION_FAILED,
                message=f"compensating {step.step} failed ({failure.message}); "
                f"not undone: {', '.join(names_undone)}; the rollback was for: {cause}",
            )
            await self._report_undone(undone, error)
            return Ending(EventType.FAILED, outputs=ending.outputs, error=error)
        self._record(EventType.COMPENSATED, TransitionAttrs(message=f"{len(done)} step(s) undone"))
        return ending

    async def _compensate_step(
        self,
        params: dict[str, Any],
        plan: ExecutionPlan,
        step: UndoneStep,
        cause: ErrorInfo | None,
    ) -> ErrorInfo | None:
        """One compensation, retried by Temporal under its policy; its error if it failed."""
        running = workflow.start_activity(
            names.COMPENSATE_STEP,
            CompensateInput(
                request=self._request,
                params=params,
                step=step.step,
                compensation=step.compensation,
                cause=cause,
            ),
            start_to_close_timeout=plan.timeout,
            heartbeat_timeout=plan.heartbeat_timeout,
            retry_policy=temporal_retry(plan.compensation_retry or plan.retry),
        )
        while True:
            try:
                await asyncio.shield(running)
            except asyncio.CancelledError:
                continue  # a cancellation does not stop a rollback
            except ActivityError as err:
                error, _ = classify(err)
                return error
            return None

    async def _report_undone(self, undone: list[UndoneStep], error: ErrorInfo) -> None:
        report = UndoneReport(
            action_id=self._request.action_id,
            action_type=self._request.action_type,
            reason=error.message,
            error=error,
            undone=undone,
        )
        running = workflow.start_activity(
            names.REPORT_UNDONE,
            report,
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=DURABLE_EMIT_RETRY,
        )
        while True:
            try:
                await asyncio.shield(running)
            except asyncio.CancelledError:
                continue
            return
