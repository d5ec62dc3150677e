"""ActionWorkflow: one durable action, from request to terminal state."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows import _cancellation as cancellation
from workflows._context import RunContext, show_in_web_ui
from workflows._ending import Ending, millis
from workflows._failures import internal
from workflows._kinds import KINDS
from workflows._outbox import Outbox

with workflow.unsafe.imports_passed_through():
    from karma import names, search_attributes
    from karma.envelope import Envelope, TransitionAttrs
    from karma.errors import ErrorInfo, ErrorType
    from karma.interactive import Decision, DecisionInput
    from karma.lifecycle import ActionState, EventType
    from karma.params import redact_params
    from karma.request import ActionRequest
    from karma.run_state import RunState
    from karma.status import ActionOutcome, ActionStatus, LedgerAnswer
    from karma.transitions import TransitionLog
    from karma.workflow_io import PreparedAction

PREPARE_TIMEOUT = timedelta(seconds=30)


@workflow.defn(name=names.ACTION_WORKFLOW)
class ActionWorkflow:
    """Runs one Karma action and mirrors every transition to Kafka.

    Process: `prepare_action` (a local activity) validates the request against the worker's
    registry; the workflow records REQUESTED, then FAILED(validation) or ACCEPTED, and hands
    the action to the module of its kind (`_kinds.KINDS`), each through a `RunContext`:
    - sync and event-driven (`_execute`, `_callbacks`): STARTED; each attempt is one
      `execute` activity (which also publishes the transitions recorded so far); a failed
      attempt that will be retried is RETRYING. A hand-off (AwaitCallback) is WAITING until
      `handle_callback` judges a callback final, or TIMED_OUT. `Skip` ends it SKIPPED.
    - transactional (`_saga`): `run_step` per step; a failed step or a cancellation
      compensates the completed steps in reverse (COMPENSATING, step_compensated,
      COMPENSATED); the rollback is not cancellable.
    - interactive (`_interactive`): `ask`, WAITING for the `decide` update or the timeout
      policy, DECIDED, then STARTED and the work once approved.
    - stateful (`_iterations`): `iterate` with durable state and progress, continuing as
      new with the whole state every `iterations_per_run` iterations.
    The terminal transition follows, and the workflow ends only after Kafka acknowledged
    every transition. The whole state is one `RunState`; what a cancellation means at
    each point is decided in `_cancellation`.

    Queries: `status`. Signals: `deliver_callback` (a callback; buffered until the action
    waits, deduplicated on event_id; `deliver_event` is its former name). Updates:
    `decide` (refused, leaving no trace, unless the action waits for a decision and the
    decision is well formed).
    Result: an ActionOutcome when SUCCEEDED or SKIPPED; otherwise an ApplicationError whose
    type is the error type and whose first detail is the ActionOutcome.
    """

    @workflow.init
    def __init__(self, request: ActionRequest) -> None:
        self._request = request
        self._run = request.resume.model_copy(deep=True) if request.resume else RunState()
        self._log = TransitionLog(request, self._run)
        # Started without Karma's search attributes (a namespace without them): leave them be.
        indexing = workflow.info().typed_search_attributes.get(search_attributes.STATE) is not None
        outbox = Outbox(
            self._log, commit_first=request.contract >= 3, emit_whole=request.contract >= 4
        )
        self._ctx = RunContext(request, self._run, self._log, outbox, indexing=indexing)
        self._answered: LedgerAnswer | None = None
        self._finishing = False  # the terminal transition is being recorded

    @workflow.query(name=names.STATUS_QUERY)
    def status(self) -> ActionStatus:
        if self._answered is not None:
            return self._answered.status()
        run = self._run
        return ActionStatus(
            action_id=self._request.action_id,
            action_type=self._request.action_type,
            state=run.state,
            attempt=run.attempt,
            outputs=run.outputs,
            error=run.error,
            transitions=self._log.transitions,
            emitted_seq=run.emitted_seq,
            external_workflow_id=run.callbacks.external_id,
            pending_callbacks=len(run.callbacks.inbox),
            decision_request=run.question.request if run.question else None,
            decision=run.decision,
            compensated_steps=list(run.compensated),
        )

    @workflow.signal(name=names.DELIVER_CALLBACK_SIGNAL)
    def deliver_callback(self, callback: Envelope) -> None:
        """Buffer a callback; a redelivered one (same event_id) is dropped."""
        waiting = self._run.callbacks
        if callback.event_id in waiting.seen or self._finishing or self._run.state.is_terminal:
            return
        waiting.seen.append(callback.event_id)
        waiting.inbox.append(callback)

    @workflow.signal(name=names.DELIVER_EVENT_SIGNAL)
    def deliver_event(self, callback: Envelope) -> None:
        """The same, under the name it had in histories recorded before."""
        self.deliver_callback(callback)

    @workflow.update(name=names.DECIDE_UPDATE)
    async def decide(self, decision: DecisionInput) -> Decision:
        """Approve or reject an interactive action (validated first: see below)."""
        self._run.decision = decision.validated().model_copy(update={"at": workflow.now()})
        return self._run.decision

    @decide.validator
    def _validate_decision(self, decision: DecisionInput) -> None:
        """Reject, without a trace in the history, a decision that is not wanted now or is
        malformed (unknown verdict, no `by`, a rejection without a reason)."""
        run = self._run
        if run.question is None or run.decision is not None or self._finishing:
            raise ApplicationError(
                f"action {self._request.action_id} is not waiting for a decision "
                f"(state {run.state.value})",
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
            ending = await self._run_action()
        except asyncio.CancelledError:
            ending = cancellation.ending(self._run.outputs, self._ctx.cancelled_at)
        if self._answered is not None:
            return await self._answer(self._answered)
        return await self._finish(ending)

    async def _run_action(self) -> Ending:
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
        ctx = self._ctx
        ctx.plan, ctx.params, ctx.prepared_at = plan, prepared.params, at
        self._run.output_names = plan.output_names
        kind = KINDS.get(plan.mode)
        if kind is None:  # a kind registered on the worker without its workflow module
            reason = f"no workflow module runs {plan.mode.value!r} actions on this worker"
            error = ErrorInfo(type=ErrorType.VALIDATION, message=reason)
            return Ending(EventType.FAILED, error=error, at=at)
        if self._request.resume is None:  # a continued run recorded it already
            accepted = TransitionAttrs(
                command=self._request.action_type, args=prepared.accepted_args
            )
            ctx.record(EventType.ACCEPTED, accepted, at)
        if prepared.cached is not None:  # the type's result cache: nothing to run
            cached = prepared.cached
            return Ending(
                EventType.SUCCEEDED, outputs=cached.outputs, at=at, cached_from=cached.action_id
            )
        return await kind(ctx)

    async def _finish(self, ending: Ending) -> ActionOutcome:
        self._finishing = True
        self._record_requested(None)
        run = self._run
        # Outputs keep the same keys on every path: the declared ones, then any others.
        run.outputs = {**dict.fromkeys(run.output_names), **ending.outputs}
        run.error = ending.error
        at = ending.at or await self._ctx.stable_time()
        # Clocks of the worker and the server may differ a little: never negative.
        duration_ms = max(0, millis(at - (run.started_at or workflow.info().workflow_start_time)))
        self._ctx.record(
            ending.event_type,
            TransitionAttrs(
                attempt=run.attempt or None,
                outputs=run.outputs,
                error=ending.error,
                duration_ms=duration_ms,
                reason=ending.reason or None,
                cached_from=ending.cached_from,
                # Only a success that ran is reused: a cached answer never renews the TTL.
                cache_key=self._ctx.plan.cache_key
                if ending.event_type is EventType.SUCCEEDED
                and ending.cached_from is None
                and self._ctx.plan is not None
                else None,
            ),
            at,
        )
        self._ctx.index()
        await self._ctx.outbox.flush_to_the_end()
        await workflow.wait_condition(workflow.all_handlers_finished)
        outcome = ActionOutcome(
            action_id=self._request.action_id,
            action_type=self._request.action_type,
            state=run.state,
            outputs=run.outputs,
            error=ending.error,
            attempts=run.attempt,
            duration_ms=duration_ms,
            reason=ending.reason,
            decision=run.decision,
            undo=ending.undo,
            cached_from=ending.cached_from,
        )
        if ending.event_type in (EventType.SUCCEEDED, EventType.SKIPPED):
            return outcome
        if ending.event_type is EventType.CANCELLED:
            raise asyncio.CancelledError
        error = ending.error or internal("failed without an error")
        raise ApplicationError(error.message, outcome, type=error.type.value, non_retryable=True)

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

    def _record_requested(self, args: dict[str, object] | None) -> None:
        """REQUESTED is always seq 1; without validated args every value is redacted."""
        if self._log.last_seq:  # a run continued as new: show where the action stands
            if self._log.transitions:
                show_in_web_ui(self._log.transitions[-1], self._log.state)
            return
        if args is None:
            args = redact_params(None, self._request.params)
        requested = self._log.record(
            EventType.REQUESTED,
            workflow.info().workflow_start_time,
            TransitionAttrs(command=self._request.action_type, args=args),
        )
        self._ctx.outbox.recorded(requested)
        show_in_web_ui(requested, self._log.state)
