"""ActionWorkflow: one durable action, from request to terminal state."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy as TemporalRetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from workflows._failures import classify, internal, temporal_retry
from workflows._outbox import DURABLE_EMIT_RETRY, Outbox

with workflow.unsafe.imports_passed_through():
    from karma import names, search_attributes
    from karma.decision import AwaitDecision, Decision, DecisionInput, TimeoutPolicy, Verdict
    from karma.errors import ErrorInfo, ErrorType
    from karma.events import Envelope, TransitionAttrs
    from karma.executor import AwaitEvent, EventDecision, EventResult
    from karma.lifecycle import ActionState, EventType
    from karma.meta import ExecutionMode
    from karma.params import redact_params
    from karma.request import ActionRequest, Resume
    from karma.status import ActionOutcome, ActionStatus
    from karma.transitions import TransitionLog
    from karma.workflow_io import (
        CompensateInput,
        ExecuteInput,
        ExecuteOutput,
        ExecutionPlan,
        HandleEventInput,
        Phase,
        PreparedAction,
        UndoneReport,
        UndoneStep,
    )

PREPARE_TIMEOUT = timedelta(seconds=30)
# Attempts are retried by the workflow, so each one is recorded as a transition.
SINGLE_ATTEMPT = TemporalRetryPolicy(maximum_attempts=1)


@dataclass
class _Ending:
    """How the action ends: its terminal transition and what it carries."""

    event_type: EventType
    outputs: dict[str, Any] = field(default_factory=dict)
    error: ErrorInfo | None = None
    at: datetime | None = None  # replay-stable time, when workflow.now() is not
    reason: str = ""  # why the action was skipped


@workflow.defn(name=names.ACTION_WORKFLOW)
class ActionWorkflow:
    """Runs one Karma action and mirrors every transition to Kafka.

    Process: `prepare_action` (a local activity) validates the request against the worker's
    registry; the workflow records REQUESTED, then FAILED(validation) or ACCEPTED and STARTED.
    Each attempt is one `execute_action` activity (which also publishes the transitions
    recorded so far); a failed attempt that will be retried is recorded as RETRYING and the
    workflow waits out the backoff (or the error's `retry_after`). An event-driven executor
    may hand the work off (AwaitEvent): the action is WAITING until an external event
    completes it (`handle_event` judges each one; progress is recorded as it comes) or its
    timeout ends it TIMED_OUT. The terminal transition follows, and the workflow ends only
    after Kafka acknowledged every transition.

    Queries: `status` (state, attempt, outputs, error, transitions, external id).
    Signals: `deliver_event` (an external event; buffered until the action waits,
    deduplicated on event_id). Updates: none.
    Cancellation: the running attempt is cancelled, CANCELLED is recorded and the workflow
    ends cancelled. Compensation: none (sync and event-driven actions have nothing to undo).
    Result: an ActionOutcome on success; otherwise an ApplicationError whose type is the
    error type and whose first detail is the ActionOutcome.
    """

    @workflow.init
    def __init__(self, request: ActionRequest) -> None:
        self._request = request
        self._log = TransitionLog(request)
        self._outbox = Outbox(self._log)
        self._attempt = request.resume.attempt if request.resume else 0
        self._outputs: dict[str, Any] = {}
        self._output_names: list[str] = []
        self._error: ErrorInfo | None = None
        self._external_id = ""
        self._inbox: list[Envelope] = []
        self._seen_events: set[str] = set()
        self._question: AwaitDecision | None = None
        self._decision: Decision | None = None
        self._compensated: list[str] = []
        self._indexed_state = ActionState.REQUESTED
        # Started without Karma's search attributes (a namespace without them): leave them be.
        self._indexing = (
            workflow.info().typed_search_attributes.get(search_attributes.STATE) is not None
        )

    @workflow.query(name=names.STATUS_QUERY)
    def status(self) -> ActionStatus:
        return ActionStatus(
            action_id=self._request.action_id,
            action_type=self._request.action_type,
            state=self._log.state,
            attempt=self._attempt,
            outputs=self._outputs,
            error=self._error,
            transitions=self._log.events,
            emitted_seq=self._log.emitted_seq,
            external_workflow_id=self._external_id,
            pending_events=len(self._inbox),
            decision_request=self._question.request if self._question else None,
            decision=self._decision,
            compensated_steps=list(self._compensated),
        )

    @workflow.signal(name=names.DELIVER_EVENT_SIGNAL)
    def deliver_event(self, event: Envelope) -> None:
        """Buffer an external event; a redelivered one (same event_id) is dropped."""
        if event.event_id in self._seen_events or self._log.state.is_terminal:
            return
        self._seen_events.add(event.event_id)
        self._inbox.append(event)

    @workflow.update(name=names.DECIDE_UPDATE)
    async def decide(self, decision: DecisionInput) -> Decision:
        """Approve or reject an interactive action (validated first: see below)."""
        self._decision = decision.validated().model_copy(update={"at": workflow.now()})
        return self._decision

    @decide.validator
    def _validate_decision(self, decision: DecisionInput) -> None:
        """Reject, without a trace in the history, a decision that is not wanted now or is
        malformed (unknown verdict, no `by`, a rejection without a reason)."""
        if self._question is None or self._decision is not None or self._log.state.is_terminal:
            raise ApplicationError(
                f"action {self._request.action_id} is not waiting for a decision "
                f"(state {self._log.state.value})",
                type="NotWaitingForDecision",
                non_retryable=True,
            )
        try:
            decision.validated()
        except Exception as exc:
            raise ApplicationError(str(exc), type="ValidationError", non_retryable=True) from exc

    @workflow.run
    async def run(self, request: ActionRequest) -> ActionOutcome:
        try:
            ending = await self._run()
        except asyncio.CancelledError:
            cancelled = ErrorInfo(type=ErrorType.CANCELLED, message="cancelled on request")
            ending = _Ending(EventType.CANCELLED, outputs=self._outputs, error=cancelled)
        return await self._finish(ending)

    async def _run(self) -> _Ending:
        prepared: PreparedAction = await workflow.execute_local_activity(
            names.PREPARE_ACTION,
            self._request,
            result_type=PreparedAction,
            start_to_close_timeout=PREPARE_TIMEOUT,
        )
        self._record_requested(prepared.requested_args)
        # Right after a local activity workflow.now() is not replay-stable; its result is.
        at = prepared.prepared_at
        plan = prepared.plan
        if prepared.error is not None or plan is None:
            error = prepared.error or internal("prepare_action returned no plan")
            return _Ending(EventType.FAILED, error=error, at=at)
        self._output_names = plan.output_names
        if self._request.resume is not None:
            # A stateful action's continued run: what came before is recorded already.
            return await self._iterate(prepared.params, plan)
        self._record(
            EventType.ACCEPTED,
            TransitionAttrs(command=self._request.action_type, args=prepared.accepted_args),
            at=at,
        )
        if plan.mode is ExecutionMode.INTERACTIVE:
            return await self._interactive(prepared.params, plan, at)
        self._record(EventType.STARTED, TransitionAttrs(attempt=1), at=at)
        if plan.mode is ExecutionMode.TRANSACTIONAL:
            return await self._saga(prepared.params, plan)
        if plan.mode is ExecutionMode.STATEFUL:
            return await self._iterate(prepared.params, plan)
        return await self._work(prepared.params, plan)

    async def _work(self, params: dict[str, Any], plan: ExecutionPlan) -> _Ending:
        """Sync and event-driven actions, and an interactive action once approved."""
        done = await self._attempts(params, plan)
        if isinstance(done, _Ending):
            return done
        if done.skipped is not None:
            return _Ending(EventType.SKIPPED, outputs=done.outputs, reason=done.skipped)
        if done.awaiting is None:
            return _Ending(EventType.SUCCEEDED, outputs={**self._outputs, **done.outputs})
        return await self._wait_for_events(params, plan, done.awaiting)

    async def _attempts(
        self,
        params: dict[str, Any],
        plan: ExecutionPlan,
        *,
        phase: Phase = Phase.EXECUTE,
        step: str = "",
        previous: dict[str, Any] | None = None,
        state: dict[str, Any] | None = None,
        state_version: int = 0,
    ) -> ExecuteOutput | _Ending:
        """Attempts of one executor call under the action's retry policy; an ending if
        they all failed (with the outputs known so far)."""
        attempt = 1
        while True:
            self._attempt = attempt
            self._index_state()
            try:
                result: ExecuteOutput = await workflow.execute_activity(
                    names.EXECUTE_ACTION,
                    ExecuteInput(
                        request=self._request,
                        params=params,
                        attempt=attempt,
                        pending=self._log.pending(),
                        phase=phase,
                        step=step,
                        previous=previous or {},
                        decision=self._decision,
                        state=state,
                        state_version=state_version,
                    ),
                    result_type=ExecuteOutput,
                    start_to_close_timeout=plan.timeout,
                    heartbeat_timeout=plan.heartbeat_timeout,
                    retry_policy=SINGLE_ATTEMPT,
                    cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                )
            except ActivityError as err:
                error, emitted = classify(err)
                self._log.acknowledge(emitted)
            else:
                self._log.acknowledge(result.emitted_seq)
                self._error = None
                return result
            self._error = error
            if not error.retryable or attempt >= plan.retry.max_attempts:
                return _Ending(EventType.FAILED, outputs=dict(previous or {}), error=error)
            delay = (
                timedelta(seconds=error.retry_after_s)
                if error.retry_after_s is not None
                else plan.retry.delay_after(attempt)
            )
            self._record(
                EventType.RETRYING,
                TransitionAttrs(
                    attempt=attempt, error=error, retry_in_ms=_millis(delay), step=step or None
                ),
            )
            self._index_state()
            await asyncio.gather(self._outbox.flush(), workflow.sleep(delay))
            attempt += 1

    async def _iterate(self, params: dict[str, Any], plan: ExecutionPlan) -> _Ending:
        """Iterate until Break, recording progress; continue as new every
        `iterations_per_run` iterations with the state, seq and outputs carried over."""
        resume = self._request.resume
        state = resume.data if resume else None
        version = resume.data_version if resume else 0
        iterations = resume.iterations if resume else 0
        outputs = dict(resume.outputs) if resume else {}
        for _ in range(plan.iterations_per_run):
            result = await self._attempts(
                params, plan, phase=Phase.ITERATE, state=state, state_version=version
            )
            if isinstance(result, _Ending):
                result.outputs = outputs
                return result
            iterations += 1
            outputs.update(result.outputs)
            self._outputs = dict(outputs)
            iteration = result.iteration
            if iteration is None or iteration.done:
                return _Ending(EventType.SUCCEEDED, outputs=outputs)
            state, version = iteration.state, iteration.state_version
            self._record(
                EventType.PROGRESS,
                TransitionAttrs(
                    percent=iteration.progress,
                    message=iteration.message or f"iteration {iterations}",
                    iteration=iterations,
                ),
            )
            if iteration.delay > timedelta(0):
                await asyncio.gather(self._outbox.flush(), workflow.sleep(iteration.delay))
        # Bound the history: the next run starts from here with nothing to replay.
        await self._outbox.flush()
        started_at = resume.started_at if resume else workflow.info().workflow_start_time
        workflow.continue_as_new(
            self._request.model_copy(
                update={
                    "resume": Resume(
                        last_seq=self._log.last_seq,
                        state=self._log.state,
                        started_at=started_at,
                        attempt=self._attempt,
                        iterations=iterations,
                        data=state or {},
                        data_version=version,
                        outputs=outputs,
                        recent=self._log.since(resume.last_seq if resume else 0),
                    )
                }
            ),
            search_attributes=workflow.info().typed_search_attributes,
        )

    async def _saga(self, params: dict[str, Any], plan: ExecutionPlan) -> _Ending:
        """Run the steps in order; on a failed step or a cancellation, undo the completed
        ones in reverse order and end with the original error."""
        done: list[UndoneStep] = []
        outputs: dict[str, Any] = {}
        try:
            for index, step in enumerate(plan.steps):
                result = await self._attempts(
                    params, plan, phase=Phase.STEP, step=step, previous=outputs
                )
                if isinstance(result, _Ending):
                    return await self._compensate(params, plan, done, result)
                if result.skipped is not None:
                    outputs.update(result.outputs)
                    return _Ending(EventType.SKIPPED, outputs=outputs, reason=result.skipped)
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
        except asyncio.CancelledError:
            cancelled = ErrorInfo(type=ErrorType.CANCELLED, message="cancelled on request")
            ending = _Ending(EventType.CANCELLED, outputs=outputs, error=cancelled)
            return await self._compensate(params, plan, done, ending)
        return _Ending(EventType.SUCCEEDED, outputs=outputs)

    async def _compensate(
        self, params: dict[str, Any], plan: ExecutionPlan, done: list[UndoneStep], ending: _Ending
    ) -> _Ending:
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
            return _Ending(EventType.FAILED, outputs=ending.outputs, error=error)
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

    async def _interactive(
        self, params: dict[str, Any], plan: ExecutionPlan, at: datetime
    ) -> _Ending:
        """Ask, wait for the decision (or apply the timeout policy), then do the work."""
        asked = await self._attempts(params, plan, phase=Phase.ASK)
        if isinstance(asked, _Ending):
            return asked
        if asked.skipped is not None:
            return _Ending(EventType.SKIPPED, outputs=asked.outputs, reason=asked.skipped)
        question = asked.asking
        if question is None:
            return _Ending(EventType.FAILED, error=internal("ask returned no question"))
        self._question = question
        self._outputs = dict(question.outputs)
        self._record(
            EventType.WAITING,
            TransitionAttrs(
                decision_request=question.request,
                timeout_ms=_millis(question.timeout),
                outputs=self._outputs,
                message=f"on timeout: {question.on_timeout.value}",
            ),
        )
        self._index_state()
        await self._outbox.flush()
        decision = await self._decision_or_policy(question)
        if decision is None:
            return _Ending(
                EventType.TIMED_OUT,
                outputs=self._outputs,
                error=ErrorInfo(
                    type=ErrorType.TIMEOUT,
                    message="no decision, even after escalation, within "
                    f"{2 * question.timeout.total_seconds():g}s",
                ),
            )
        self._decision = decision
        self._record(EventType.DECIDED, TransitionAttrs(decision=decision.model_dump(mode="json")))
        if not decision.approved:
            return _Ending(
                EventType.FAILED,
                outputs=self._outputs,
                error=ErrorInfo(
                    type=ErrorType.REJECTED,
                    message=f"rejected by {decision.by}: {decision.reason}",
                ),
            )
        self._record(EventType.STARTED, TransitionAttrs(attempt=1))
        return await self._work(params, plan)

    async def _decision_or_policy(self, question: AwaitDecision) -> Decision | None:
        """The person's decision, or the timeout policy's; None if escalation went
        unanswered too."""
        timeout = question.timeout.total_seconds()
        rounds = 2 if question.on_timeout is TimeoutPolicy.ESCALATE else 1
        for round_ in range(rounds):
            try:
                await workflow.wait_condition(lambda: self._decision is not None, timeout=timeout)
            except TimeoutError:
                if round_ + 1 < rounds:
                    self._record(
                        EventType.ESCALATED,
                        TransitionAttrs(
                            decision_request=question.request,
                            message=f"no decision within {timeout:g}s; escalated, waiting "
                            f"{timeout:g}s more",
                        ),
                    )
                    await self._outbox.flush()
                continue
            return self._decision
        if question.on_timeout is TimeoutPolicy.ESCALATE:
            return None
        verdict = Verdict(question.on_timeout.value)
        return Decision(
            verdict=verdict,
            by="timeout policy",
            reason=f"no decision within {timeout:g}s",
            at=workflow.now(),
            automatic=True,
        )

    async def _wait_for_events(
        self, params: dict[str, Any], plan: ExecutionPlan, awaiting: AwaitEvent
    ) -> _Ending:
        self._external_id = awaiting.external_workflow_id
        self._outputs = outputs = dict(awaiting.outputs)
        self._record(
            EventType.WAITING,
            TransitionAttrs(
                external_workflow_id=self._external_id,
                timeout_ms=_millis(awaiting.timeout),
                outputs=outputs,
            ),
        )
        self._index_state()
        deadline = workflow.now() + awaiting.timeout
        await self._outbox.flush()  # the wait may be long: make WAITING visible now
        while True:
            if not self._inbox and not await self._event_before(deadline):
                return _Ending(
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
            if isinstance(judged, _Ending):
                return judged

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
    ) -> _Ending | None:
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
            return _Ending(EventType.FAILED, outputs=outputs, error=error)
        match result.decision:
            case EventDecision.COMPLETE:
                outputs.update(result.outputs)
                if result.succeeded:
                    return _Ending(EventType.SUCCEEDED, outputs=outputs)
                error = ErrorInfo(type=ErrorType.EXTERNAL, message=result.error or event.event_type)
                return _Ending(EventType.FAILED, outputs=outputs, error=error)
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

    async def _finish(self, ending: _Ending) -> ActionOutcome:
        self._record_requested(None)
        # Outputs keep the same keys on every path: the declared ones, then any others.
        self._outputs = {**dict.fromkeys(self._output_names), **ending.outputs}
        self._error = ending.error
        at = ending.at or workflow.now()
        resume = self._request.resume
        started = resume.started_at if resume else workflow.info().workflow_start_time
        duration_ms = _millis(at - started)
        self._record(
            ending.event_type,
            TransitionAttrs(
                attempt=self._attempt or None,
                outputs=self._outputs,
                error=ending.error,
                duration_ms=duration_ms,
                reason=ending.reason or None,
            ),
            at=at,
        )
        self._index_state()
        await self._outbox.flush_to_the_end()
        await workflow.wait_condition(workflow.all_handlers_finished)
        outcome = ActionOutcome(
            action_id=self._request.action_id,
            action_type=self._request.action_type,
            state=self._log.state,
            outputs=self._outputs,
            error=ending.error,
            attempts=self._attempt,
            duration_ms=duration_ms,
            reason=ending.reason,
            decision=self._decision,
        )
        if ending.event_type in (EventType.SUCCEEDED, EventType.SKIPPED):
            return outcome
        if ending.event_type is EventType.CANCELLED:
            raise asyncio.CancelledError
        error = ending.error or internal("failed without an error")
        raise ApplicationError(error.message, outcome, type=error.type.value, non_retryable=True)

    def _record_requested(self, args: dict[str, Any] | None) -> None:
        """REQUESTED is always seq 1; without validated args every value is redacted."""
        if self._log.last_seq:
            return
        if args is None:
            args = redact_params(None, self._request.params)
        self._log.record(
            EventType.REQUESTED,
            workflow.info().workflow_start_time,
            TransitionAttrs(command=self._request.action_type, args=args),
        )

    def _record(
        self, event_type: EventType, attrs: TransitionAttrs, *, at: datetime | None = None
    ) -> None:
        self._log.record(event_type, at or workflow.now(), attrs)

    def _index_state(self) -> None:
        """Keep KarmaState (and KarmaExternalId) current, once per workflow task."""
        state = self._log.state
        if not self._indexing or state is self._indexed_state:
            return
        updates = [search_attributes.STATE.value_set(state.value)]
        if state is ActionState.WAITING:
            updates.append(search_attributes.EXTERNAL_ID.value_set(self._external_id))
        workflow.upsert_search_attributes(updates)
        self._indexed_state = state


def _millis(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)
