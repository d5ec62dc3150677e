"""Interactive actions: ask, wait for a person's decision (or the timeout policy), then work."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from temporalio import workflow

from workflows._core import ActionCore, Ending, millis
from workflows._failures import internal

with workflow.unsafe.imports_passed_through():
    from karma.decision import AwaitDecision, Decision, TimeoutPolicy, Verdict
    from karma.errors import ErrorInfo, ErrorType
    from karma.events import TransitionAttrs
    from karma.lifecycle import EventType
    from karma.workflow_io import (
        ExecutionPlan,
        Phase,
    )


class Approval(ActionCore):
    """The question, the wait for the `decide` update, escalation and timeout policies."""

    async def _interactive(
        self, params: dict[str, Any], plan: ExecutionPlan, at: datetime
    ) -> Ending:
        """Ask, wait for the decision (or apply the timeout policy), then do the work."""
        asked = await self._attempts(params, plan, phase=Phase.ASK)
        if isinstance(asked, Ending):
            return asked
        if self._cancel_requested():  # it came while the question was being prepared
            return self._cancelled(asked.outputs)
        if asked.skipped is not None:
            return Ending(EventType.SKIPPED, outputs=asked.outputs, reason=asked.skipped)
        question = asked.asking
        if question is None:
            return Ending(EventType.FAILED, error=internal("ask returned no question"))
        self._question = question
        self._outputs = dict(question.outputs)
        self._record(
            EventType.WAITING,
            TransitionAttrs(
                decision_request=question.request,
                timeout_ms=millis(question.timeout),
                outputs=self._outputs,
                message=f"on timeout: {question.on_timeout.value}",
            ),
        )
        self._index_state()
        await self._outbox.flush()
        decision = await self._decision_or_policy(question)
        if decision is None:
            return Ending(
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
            return Ending(
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
                if self._decision is not None:  # accepted in the same activation
                    return self._decision
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
