"""RunContext: the narrow facade a kind of action uses. It records transitions (at
replay-stable times), runs attempt loops under the action's retry policy, waits under the
cancellation policy and keeps the search attributes current."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows import _cancellation as cancellation
from workflows._calls import Call
from workflows._ending import Ending, millis
from workflows._failures import SINGLE_ATTEMPT, classify
from workflows._outbox import Outbox, commit

with workflow.unsafe.imports_passed_through():
    from karma import search_attributes, web_ui
    from karma.envelope import Transition, TransitionAttrs
    from karma.lifecycle import ActionState, EventType
    from karma.request import ActionRequest
    from karma.run_state import RunState
    from karma.transitions import TransitionLog
    from karma.workflow_io import AttemptOutput, ExecutionPlan

Out = TypeVar("Out", bound=AttemptOutput)


class RunContext:
    """What one run of an action may do; the kinds get nothing else."""

    def __init__(
        self,
        request: ActionRequest,
        run: RunState,
        log: TransitionLog,
        outbox: Outbox,
        *,
        indexing: bool,
    ) -> None:
        self.request = request
        self.run = run
        self.log = log
        self.outbox = outbox
        self.plan: ExecutionPlan | None = None
        self.params: dict[str, Any] = {}
        # When prepare_action ran: the replay-stable time of the transitions right after it.
        self.prepared_at = workflow.info().workflow_start_time
        self._indexing = indexing
        self._indexed = ActionState.REQUESTED
        # Whether the request was made for contract 2 (typed activities, stable times):
        # runs of requests made before keep the commands they were recorded with. A field
        # of the input rather than a patch marker: no marker and no search-attribute upsert
        # in every action's history.
        self.core_2 = request.contract >= 2
        # When an attempt stopped for a cancellation (the time of the CANCELLED that follows).
        self.cancelled_at: datetime | None = None

    @property
    def execution(self) -> ExecutionPlan:
        assert self.plan is not None, "prepare_action gives the plan"
        return self.plan

    def record(self, event_type: EventType, attrs: TransitionAttrs, at: datetime) -> None:
        """Record a transition; `at` comes from `stable_time` or a recorded result."""
        transition = self.log.record(event_type, at, attrs)
        self.outbox.recorded(transition)
        show_in_web_ui(transition, self.log.state)

    async def stable_time(self, recorded: datetime | None = None) -> datetime:
        """A time for a transition that is the same on every publication of it.

        A time a result recorded in the history says is stable. Otherwise the workflow's
        clock is taken and the task that took it is committed (a 1 ms timer) before the
        transition is recorded: a task lost and retried after publishing would otherwise
        publish the transition again with another time.
        """
        if recorded is not None:
            return recorded
        if not self.core_2:
            return workflow.now()
        at = workflow.now()
        await commit()
        return at

    def index(self) -> None:
        """Keep KarmaState (and KarmaExternalId) current, once per workflow task. Not for
        STARTED (contract 2): most actions end within their first attempt, and an upsert
        is a history event; KarmaState moves on at a retry, a wait, a rollback or the end."""
        state = self.log.state
        if not self._indexing or state is self._indexed:
            return
        if self.core_2 and state is ActionState.STARTED:
            return
        updates = [search_attributes.STATE.value_set(state.value)]
        if state is ActionState.WAITING:
            updates.append(search_attributes.EXTERNAL_ID.value_set(self.run.callbacks.external_id))
        workflow.upsert_search_attributes(updates)
        self._indexed = state

    async def attempts(
        self, call: Call[Out], *, keep: dict[str, Any] | None = None
    ) -> Out | Ending:
        """Attempts of one executor method under the action's retry policy; an ending if
        they all failed (keeping `keep` as the outputs)."""
        plan = self.execution
        attempt = 1
        while True:
            self.run.attempt = attempt
            self.index()
            activity, inp = call.invocation(
                self.request, self.params, attempt, self.log.pending(), core_2=self.core_2
            )
            try:
                result: Out = await workflow.execute_activity(
                    activity,
                    inp,
                    result_type=call.result_type,
                    start_to_close_timeout=plan.timeout,
                    heartbeat_timeout=plan.heartbeat_timeout,
                    retry_policy=SINGLE_ATTEMPT,
                    cancellation_type=cancellation.DURING_ATTEMPT,
                )
            except ActivityError as err:
                failure = classify(err)
            else:
                self.log.acknowledge(result.emitted_seq)
                self.run.error = None
                return result
            self.log.acknowledge(failure.emitted_seq)
            self.run.error = error = failure.error
            if cancellation.after_failed_attempt(error):
                self.cancelled_at = failure.failed_at
                raise asyncio.CancelledError
            at = await self.stable_time(failure.failed_at)
            if not error.retryable or attempt >= plan.retry.max_attempts:
                return Ending(EventType.FAILED, outputs=dict(keep or {}), error=error, at=at)
            delay = (
                timedelta(seconds=error.retry_after_s)
                if error.retry_after_s is not None
                else plan.retry.delay_after(attempt)
            )
            step = call.arguments.get("step") or None
            attrs = TransitionAttrs(
                attempt=attempt, error=error, retry_in_ms=millis(delay), step=step
            )
            self.record(EventType.RETRYING, attrs, at)
            self.index()
            await self.outbox.flush_while_sleeping(delay)
            attempt += 1

    async def wait_until(self, condition: Callable[[], bool], deadline: datetime) -> bool:
        """Wait for `condition` until `deadline`; False if the deadline came first. A
        cancellation ends the wait (it raises)."""
        remaining = (deadline - workflow.now()).total_seconds()
        if remaining <= 0:
            return False
        try:
            await workflow.wait_condition(condition, timeout=remaining)
        except TimeoutError:
            return False
        return True


def show_in_web_ui(transition: Transition, state: ActionState) -> None:
    """The workflow's current details in the Temporal Web UI (served by a query; nothing
    is added to the history)."""
    workflow.set_current_details(web_ui.current_details(transition, state))
