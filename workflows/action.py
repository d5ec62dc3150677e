"""ActionWorkflow: one durable action, from request to terminal state."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows._approval import Approval
from workflows._core import Ending, millis
from workflows._events import EventWaiting
from workflows._failures import internal
from workflows._iterations import Iterations
from workflows._outbox import Outbox
from workflows._saga import Saga

with workflow.unsafe.imports_passed_through():
    from karma import names, search_attributes
    from karma.decision import Decision, DecisionInput
    from karma.errors import ErrorInfo, ErrorType
    from karma.events import Envelope, TransitionAttrs
    from karma.lifecycle import ActionState, EventType
    from karma.meta import ExecutionMode
    from karma.params import redact_params
    from karma.request import ActionRequest
    from karma.status import ActionOutcome, ActionStatus, LedgerAnswer
    from karma.transitions import TransitionLog
    from karma.workflow_io import ExecutionPlan, PreparedAction

PREPARE_TIMEOUT = timedelta(seconds=30)


@workflow.defn(name=names.ACTION_WORKFLOW)
class ActionWorkflow(EventWaiting, Saga, Approval, Iterations):
    """Runs one Karma action and mirrors every transition to Kafka.

    Process: `prepare_action` (a local activity) validates the request against the worker's
    registry; the workflow records REQUESTED, then FAILED(validation) or ACCEPTED. Then, by
    the action's kind:
    - sync: STARTED; each attempt is one `execute_action` activity (which also publishes
      the transitions recorded so far); a failed attempt that will be retried is RETRYING
      and the workflow waits out the backoff or the error's `retry_after`. `Skip` ends it
      SKIPPED.
    - event-driven (`_events`): the executor hands the work off (AwaitEvent); WAITING until
      `handle_event` judges an external event final, or TIMED_OUT.
    - transactional (`_saga`): steps in order; a failed step or a cancellation compensates
      the completed steps in reverse (COMPENSATING, step_compensated, COMPENSATED).
    - interactive (`_approval`): `ask`, WAITING for the `decide` update or the timeout
      policy, DECIDED, then STARTED and the work once approved.
    - stateful (`_iterations`): iterations with durable state and progress, continuing as
      new every `iterations_per_run` iterations.
    The terminal transition follows, and the workflow ends only after Kafka acknowledged
    every transition.

    Queries: `status` (state, attempt, outputs, error, transitions, external id, decision
    request and decision, compensated steps).
    Signals: `deliver_event` (an external event; buffered until the action waits,
    deduplicated on event_id).
    Updates: `decide` (approve/reject; the validator refuses it, leaving no trace, unless
    the action waits for a decision and the decision is well formed).
    Cancellation: the running attempt is cancelled and CANCELLED recorded; a transactional
    action compensates first (the rollback itself is not cancellable).
    Result: an ActionOutcome when SUCCEEDED or SKIPPED; otherwise an ApplicationError whose
    type is the error type and whose first detail is the ActionOutcome.
    """

    @workflow.init
    def __init__(self, request: ActionRequest) -> None:
        self._request = request
        self._log = TransitionLog(request)
        self._outbox = Outbox(self._log)
        self._attempt = request.resume.attempt if request.resume else 0
        self._outputs = dict(request.resume.outputs) if request.resume else {}
        self._output_names = []
        self._error = None
        self._external_id = ""
        self._inbox = []
        self._seen_events = set()
        self._question = None
        self._decision = None
        self._compensated = []
        self._answered: LedgerAnswer | None = None
        self._indexed_state = ActionState.REQUESTED
        # Started without Karma's search attributes (a namespace without them): leave them be.
        self._indexing = (
            workflow.info().typed_search_attributes.get(search_attributes.STATE) is not None
        )

    @workflow.query(name=names.STATUS_QUERY)
    def status(self) -> ActionStatus:
        if self._answered is not None:
            return self._answered.status()
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
            ending = Ending(EventType.CANCELLED, outputs=self._outputs, error=cancelled)
        if self._answered is not None:
            return await self._answer(self._answered)
        return await self._finish(ending)

    async def _answer(self, answered: LedgerAnswer) -> ActionOutcome:
        """The action ran before (the ledger says so): answer with that run's outcome,
        recording and publishing nothing."""
        await workflow.wait_condition(workflow.all_handlers_finished)
        outcome = answered.outcome()
        if outcome.state in (ActionState.SUCCEEDED, ActionState.SKIPPED):
            return outcome
        error = outcome.error or ErrorInfo(
            type=ErrorType.INTERNAL,
            message=f"the action ran before; its last recorded state is {outcome.state.value}",
        )
        raise ApplicationError(error.message, outcome, type=error.type.value, non_retryable=True)

    async def _run(self) -> Ending:
        prepared: PreparedAction = await workflow.execute_local_activity(
            names.PREPARE_ACTION,
            self._request,
            result_type=PreparedAction,
            start_to_close_timeout=PREPARE_TIMEOUT,
        )
        if prepared.ran_before:
            self._answered = LedgerAnswer(transitions=prepared.ran_before)
            return Ending(EventType.SUCCEEDED)  # not recorded: run() answers instead
        self._record_requested(prepared.requested_args)
        # Right after a local activity workflow.now() is not replay-stable; its result is.
        at = prepared.prepared_at
        plan = prepared.plan
        if prepared.error is not None or plan is None:
            error = prepared.error or internal("prepare_action returned no plan")
            return Ending(EventType.FAILED, error=error, at=at)
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

    async def _work(self, params: dict[str, Any], plan: ExecutionPlan) -> Ending:
        """Sync and event-driven actions, and an interactive action once approved."""
        done = await self._attempts(params, plan)
        if isinstance(done, Ending):
            return done
        if done.skipped is not None:
            return Ending(EventType.SKIPPED, outputs=done.outputs, reason=done.skipped)
        if done.awaiting is None:
            return Ending(EventType.SUCCEEDED, outputs={**self._outputs, **done.outputs})
        if self._cancel_requested():  # it came while the executor handed the work off
            return self._cancelled(dict(done.awaiting.outputs))
        return await self._wait_for_events(params, plan, done.awaiting)

    async def _finish(self, ending: Ending) -> ActionOutcome:
        self._record_requested(None)
        # Outputs keep the same keys on every path: the declared ones, then any others.
        self._outputs = {**dict.fromkeys(self._output_names), **ending.outputs}
        self._error = ending.error
        at = ending.at or workflow.now()
        resume = self._request.resume
        started = resume.started_at if resume else workflow.info().workflow_start_time
        duration_ms = millis(at - started)
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
