"""PipelineWorkflow: a DAG of steps, each a child ActionWorkflow."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    FailureError,
    WorkflowAlreadyStartedError,
)
from temporalio.exceptions import CancelledError as TemporalCancelled

from workflows import _cancellation as cancellation
from workflows._ending import millis
from workflows._failures import classify, internal
from workflows._outbox import DURABLE_EMIT_RETRY, Outbox, commit

with workflow.unsafe.imports_passed_through():
    from karma import names, search_attributes, web_ui
    from karma.envelope import TransitionAttrs
    from karma.errors import ErrorInfo, ErrorType
    from karma.ids import workflow_id_for
    from karma.lifecycle import ActionState, EventType
    from karma.meta import RetryPolicy
    from karma.pipelines.run import (
        FROM_ACTION,
        PipelineRequest,
        PipelineStatus,
        StepResult,
        StepState,
        child_request,
        decide,
        stopped_by,
    )
    from karma.pipelines.spec import Step
    from karma.request import ActionRequest
    from karma.run_state import RunState
    from karma.status import ActionOutcome, Undo, UndoStep
    from karma.transitions import TransitionLog
    from karma.workflow_io import CompensateInput, UndoneReport, UndoneStep

from workflows._failures import temporal_retry

COMPENSATION_RETRY = RetryPolicy(max_attempts=5)
# A pipeline's result and status carry every step's outputs: bounded, so that hundreds of
# steps stay under Temporal's 2 MB limit on a payload.
STEP_OUTPUTS_BYTES = 4096
PIPELINE_OUTPUTS_BYTES = 256 * 1024
ENDINGS = {
    ActionState.SUCCEEDED: EventType.PIPELINE_SUCCEEDED,
    ActionState.FAILED: EventType.PIPELINE_FAILED,
    ActionState.CANCELLED: EventType.PIPELINE_CANCELLED,
}


@workflow.defn(name=names.PIPELINE_WORKFLOW)
class PipelineWorkflow:
    """Runs a pipeline's steps as child ActionWorkflows and mirrors its own transitions
    (`pipeline.*`, under the pipeline id, like an action's) to Kafka.

    A step starts once every step it `needs` ended and a slot is free (`max_parallel`); it
    is SKIPPED when its condition is false, when every step it needs was skipped, when one
    of them did not succeed (`on_failure: continue` lets the pipeline go on, not its
    dependents) or when it reads the outputs of a step that did not succeed. A step that
    fails with `on_failure: fail` stops the pipeline: no further step starts, the running
    ones end, and the pipeline FAILS; with the pipeline's `on_failure: compensate` the
    transactional steps that succeeded are then undone, the last finished first (reverse
    dependency order). Cancelling the pipeline cancels its running children (a
    transactional one compensates itself) and, with `compensate`, undoes the finished ones.

    Query: `status` (a PipelineStatus). Result: the PipelineStatus when SUCCEEDED;
    otherwise an ApplicationError carrying it (or a cancellation).
    """

    @workflow.init
    def __init__(self, request: PipelineRequest) -> None:
        self._request = request
        self._spec = request.spec
        self._as_action = request.as_action()
        self._run = RunState()
        self._log = TransitionLog(self._as_action, self._run)
        self._outbox = Outbox(self._log, commit_first=True, emit_whole=True)
        self._steps = {s.id: StepResult(id=s.id, action=s.action) for s in self._spec.steps}
        self._slots = asyncio.Semaphore(self._spec.max_parallel)
        self._stop: StepResult | None = None  # the step whose failure stops the pipeline
        self._undo: list[tuple[str, ActionRequest, Undo]] = []  # finished transactional ones
        self._recording_done = False
        self._indexing = (
            workflow.info().typed_search_attributes.get(search_attributes.STATE) is not None
        )

    @workflow.query(name=names.STATUS_QUERY)
    def status(self) -> PipelineStatus:
        return PipelineStatus(
            pipeline_id=self._request.pipeline_id,
            name=self._spec.name,
            state=self._run.state,
            steps=list(self._steps.values()),
            error=self._run.error,
            plan_hash=self._request.plan_hash,
            transitions=self._log.transitions,
        )

    @workflow.run
    async def run(self, request: PipelineRequest) -> PipelineStatus:
        start = workflow.info().workflow_start_time
        self._record(
            EventType.PIPELINE_REQUESTED,
            TransitionAttrs(command=self._spec.name, args=request.redacted_params()),
            start,
        )
        flusher = asyncio.ensure_future(self._publish())
        tasks = [asyncio.ensure_future(self._run_step(s)) for s in self._spec.steps]
        cancelled = False
        try:
            self._record(
                EventType.PIPELINE_STARTED,
                TransitionAttrs(message=f"{len(tasks)} step(s), plan {request.plan_hash[:12]}"),
                await self._time(),
            )
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            cancelled = True
            for task in tasks:  # a cancel landing before the gather reached none of them
                task.cancel()
        # Every step task ends (a running child ends cancelled, or as it ends anyway).
        await cancellation.uncancellable(asyncio.gather(*tasks, return_exceptions=True))
        at = await cancellation.uncancellable(self._time())
        for result in self._steps.values():
            if result.state is StepState.PENDING:
                why = "the pipeline was cancelled" if cancelled else "the pipeline stopped"
                self._end_step(result, StepState.NOT_RUN, why, None, at)
        state = ActionState.SUCCEEDED
        error: ErrorInfo | None = None
        if cancelled:
            state, error = ActionState.CANCELLED, cancellation.ON_REQUEST
        elif self._stop is not None:
            state, error = ActionState.FAILED, stopped_by(self._stop)
        if state is not ActionState.SUCCEEDED and self._spec.on_failure == "compensate":
            failure = await cancellation.uncancellable(self._compensate(error))
            if failure is not None:
                state, error = ActionState.FAILED, failure
        return await cancellation.uncancellable(self._finish(state, error, flusher))

    async def _finish(
        self, state: ActionState, error: ErrorInfo | None, flusher: asyncio.Future[None]
    ) -> PipelineStatus:
        at = await self._time()
        outputs: dict[str, Any] = {
            r.id: r.outputs for r in self._steps.values() if r.state is StepState.SUCCEEDED
        }
        if len(json.dumps(outputs, default=str)) > PIPELINE_OUTPUTS_BYTES:
            outputs = {"_omitted": "the steps' outputs are too large together: see each step"}
        duration = millis(at - workflow.info().workflow_start_time)
        self._run.error = error
        self._record(
            ENDINGS[state],
            TransitionAttrs(outputs=outputs, error=error, duration_ms=max(0, duration)),
            at,
        )
        if self._indexing:
            workflow.upsert_search_attributes([search_attributes.STATE.value_set(state.value)])
        self._recording_done = True
        await flusher
        await self._outbox.flush_to_the_end()
        status = self.status()
        if state is ActionState.SUCCEEDED:
            return status
        if state is ActionState.CANCELLED:
            raise asyncio.CancelledError
        assert error is not None
        raise ApplicationError(error.message, status, type=error.type.value, non_retryable=True)

    # -- steps -------------------------------------------------------------------------

    async def _run_step(self, step: Step) -> None:
        result = self._steps[step.id]
        try:
            await workflow.wait_condition(
                lambda: all(self._steps[n].state.is_final for n in step.needs)
            )
            if self._stop is not None:
                await self._not_run(result)
                return
            decided = decide(step, self._steps, self._request.params)
            if not isinstance(decided, dict):
                self._end_step(result, *decided, await self._time())
                self._stopped_by(step, result)
                return
            async with self._slots:
                if self._stop is not None:
                    await self._not_run(result)
                    return
                await self._run_child(step, result, decided)
        except asyncio.CancelledError:
            if result.state is StepState.RUNNING:  # cancelled while its child was starting
                at = await cancellation.uncancellable(self._time())
                self._end_step(result, StepState.CANCELLED, "", cancellation.ON_REQUEST, at)
            # A step that had not started is recorded with the others at the end.

    async def _not_run(self, result: StepResult) -> None:
        assert self._stop is not None
        reason = f"the pipeline stopped: step {self._stop.id} {self._stop.state.value}"
        self._end_step(result, StepState.NOT_RUN, reason, None, await self._time())

    async def _run_child(self, step: Step, result: StepResult, params: dict[str, object]) -> None:
        try:
            request = child_request(self._request, step, params, self._steps)
        except Exception as exc:  # noqa: BLE001 - a ValidationError naming the field
            invalid = ErrorInfo.from_exception(exc)
            self._end_step(result, StepState.FAILED, "", invalid, await self._time())
            self._stopped_by(step, result)
            return
        at = await self._time()
        result.state, result.action_id = StepState.RUNNING, request.action_id
        self._record(
            EventType.PIPELINE_STEP_STARTED,
            TransitionAttrs(step=step.id, command=step.action, child_action_id=request.action_id),
            at,
        )
        starting = asyncio.ensure_future(self._start_child(request))
        # Started whatever comes meanwhile: a child started as the pipeline is cancelled
        # is cancelled and waited for (its rollback included), never abandoned.
        try:
            handle, cancelled = await cancellation.absorbing(starting)
        except (WorkflowAlreadyStartedError, FailureError) as exc:
            failed = internal(f"the step's action could not start: {exc}")
            self._end_step(result, StepState.FAILED, "", failed, await self._time())
            self._stopped_by(step, result)
            return
        timed_out = False
        if cancelled:
            handle.cancel()
        elif step.timeout_s is not None:
            try:
                done, _ = await workflow.wait([handle], timeout=step.timeout_s)
            except asyncio.CancelledError:
                done = [handle]  # the pipeline is cancelled: that cancels the child below
                handle.cancel()
            if not done:
                timed_out = True
                handle.cancel()
        state, outcome, error = await self._child_end(handle)
        if timed_out and state is StepState.CANCELLED:
            state = StepState.TIMED_OUT
            error = ErrorInfo(
                type=ErrorType.TIMEOUT, message=f"step timeout of {step.timeout_s:g} s reached"
            )
        if outcome is not None:
            result.outputs = bounded_outputs(outcome.outputs, request.action_id)
            if state is StepState.SUCCEEDED and outcome.undo is not None:
                self._undo.append((step.id, request, outcome.undo))
        reason = outcome.reason if outcome is not None else ""
        self._end_step(result, state, reason, error, await cancellation.uncancellable(self._time()))
        self._stopped_by(step, result)

    async def _start_child(
        self, request: ActionRequest
    ) -> workflow.ChildWorkflowHandle[object, ActionOutcome]:
        return await workflow.start_child_workflow(
            names.ACTION_WORKFLOW,
            request,
            id=workflow_id_for(request.action_id),
            task_queue=workflow.info().task_queue,
            cancellation_type=workflow.ChildWorkflowCancellationType.WAIT_CANCELLATION_COMPLETED,
            parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
            search_attributes=search_attributes.initial(request) if self._indexing else None,
            static_summary=web_ui.summary(request),
            static_details=web_ui.details(request),
            result_type=ActionOutcome,
        )

    async def _child_end(
        self, handle: workflow.ChildWorkflowHandle[object, ActionOutcome]
    ) -> tuple[StepState, ActionOutcome | None, ErrorInfo | None]:
        """How the child ended; a cancellation of the pipeline meanwhile cancels the child,
        which is waited for (its rollback included)."""
        try:
            outcome = await _child_result(handle)
        except ChildWorkflowError as err:
            if isinstance(err.cause, TemporalCancelled):
                return StepState.CANCELLED, None, cancellation.ON_REQUEST
            if isinstance(err.cause, ApplicationError) and err.cause.details:
                try:
                    outcome = ActionOutcome.model_validate(err.cause.details[0])
                except ValueError:
                    pass
                else:
                    state = FROM_ACTION.get(outcome.state, StepState.FAILED)
                    return state, outcome, outcome.error
            return StepState.FAILED, None, internal(f"the step's action ended: {err.cause!r}")
        return FROM_ACTION.get(outcome.state, StepState.SUCCEEDED), outcome, None

    def _end_step(
        self,
        result: StepResult,
        state: StepState,
        reason: str,
        error: ErrorInfo | None,
        at: datetime,
    ) -> None:
        result.state, result.reason, result.error = state, reason, error
        self._record(
            EventType.PIPELINE_STEP_ENDED,
            TransitionAttrs(
                step=result.id,
                command=result.action,
                child_action_id=result.action_id or None,
                outcome=state.value,
                reason=reason or None,
                error=error,
            ),
            at,
        )

    def _stopped_by(self, step: Step, result: StepResult) -> None:
        if result.state.failed and step.on_failure == "fail" and self._stop is None:
            self._stop = result

    # -- rollback ----------------------------------------------------------------------

    async def _compensate(self, cause: ErrorInfo | None) -> ErrorInfo | None:
        """Undo the finished transactional steps, the last finished first; the error of a
        rollback that could not finish (what it left is reported to the DLQ)."""
        if not self._undo:
            return None
        self._record(
            EventType.PIPELINE_COMPENSATING,
            TransitionAttrs(
                error=cause, message=f"undoing {len(self._undo)} step(s)",
                undone=[step_id for step_id, _, _ in reversed(self._undo)],
            ),
            await self._time(),
        )  # fmt: skip
        for index in reversed(range(len(self._undo))):
            step_id, request, undo = self._undo[index]
            failure, left = await self._undo_action(request, undo, cause)
            self._record(
                EventType.PIPELINE_STEP_COMPENSATED,
                TransitionAttrs(
                    step=step_id,
                    child_action_id=request.action_id,
                    outcome="failed" if failure else "compensated",
                    error=failure,
                ),
                await self._time(),
            )
            if failure is None:
                self._steps[step_id].state = StepState.COMPENSATED
                continue
            return await self._report_undone(index, left, failure)
        return None

    async def _undo_action(
        self, request: ActionRequest, undo: Undo, cause: ErrorInfo | None
    ) -> tuple[ErrorInfo | None, list[UndoStep]]:
        """Undo one action's steps, the last first: the error that stopped it, and the
        steps left undone."""
        for index in reversed(range(len(undo.steps))):
            step = undo.steps[index]
            heartbeat = undo.heartbeat_timeout_s
            try:
                await workflow.execute_activity(
                    names.COMPENSATE_STEP,
                    CompensateInput(
                        request=request,
                        params=undo.params,
                        step=step.step,
                        compensation=step.compensation,
                        cause=cause,
                    ),
                    start_to_close_timeout=timedelta(seconds=undo.timeout_s),
                    heartbeat_timeout=timedelta(seconds=heartbeat) if heartbeat else None,
                    retry_policy=temporal_retry(undo.retry or COMPENSATION_RETRY),
                )
            except ActivityError as err:
                return classify(err).error, undo.steps[: index + 1]
        return None, []

    async def _report_undone(
        self, index: int, left: list[UndoStep], failure: ErrorInfo
    ) -> ErrorInfo:
        """Put what the rollback left undone on the DLQ, one letter per action: the rest
        of the failing one, and every finished step before it."""
        step_id = self._undo[index][0]
        undone = [step_id, *(s for s, _, _ in reversed(self._undo[:index]))]
        error = ErrorInfo(
            type=ErrorType.COMPENSATION_FAILED,
            message=f"undoing step {step_id} failed ({failure.message}); "
            f"not undone: {', '.join(undone)}",
        )
        pending = [(self._undo[index][1], left)]
        pending += [(request, undo.steps) for _, request, undo in reversed(self._undo[:index])]
        for request, steps in pending:
            report = UndoneReport(
                action_id=request.action_id,
                action_type=request.action_type,
                reason=error.message,
                error=error,
                undone=[UndoneStep(step=s.step, compensation=s.compensation) for s in steps],
            )
            await workflow.execute_activity(
                names.REPORT_UNDONE,
                report,
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=DURABLE_EMIT_RETRY,
            )
        return error

    # -- transitions -------------------------------------------------------------------

    async def _time(self) -> datetime:
        """A replay-stable time: that of a workflow task a timer started (the same on
        every replay, whatever local activities ran before in the task)."""
        await commit()
        return workflow.now()

    def _record(self, event_type: EventType, attrs: TransitionAttrs, at: datetime) -> None:
        transition = self._log.record(event_type, at, attrs)
        self._outbox.recorded(transition)
        workflow.set_current_details(web_ui.current_details(transition, self._log.state))

    async def _publish(self) -> None:
        """The one task that flushes the outbox (two flushes at once would publish a
        batch twice), until the terminal transition is acknowledged."""
        while True:
            await workflow.wait_condition(lambda: bool(self._log.pending()) or self._recording_done)
            if not self._log.pending():
                return
            await cancellation.uncancellable(self._outbox.flush())


async def _child_result(
    handle: workflow.ChildWorkflowHandle[object, ActionOutcome],
) -> ActionOutcome:
    """The child's end. Cancelling the waiting task cancels the child and the wait goes
    on (the SDK's own handling); when the child ended in the same task as the
    cancellation, its result is taken rather than lost."""
    try:
        return await handle
    except asyncio.CancelledError:
        if not handle.done():
            handle.cancel()
        return await cancellation.uncancellable(handle)


def bounded_outputs(outputs: dict[str, Any], action_id: str) -> dict[str, Any]:
    """A step's outputs as the pipeline keeps them (its status, its result): whole up to
    STEP_OUTPUTS_BYTES, else a pointer to the action that holds them."""
    size = len(json.dumps(outputs, default=str))
    if size <= STEP_OUTPUTS_BYTES:
        return outputs
    return {"_omitted": f"{size} bytes of outputs: see action {action_id}"}
