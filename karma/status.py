"""What an action looks like from outside: its live status and its final outcome."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pydantic import BaseModel, Field

from karma.envelope import Transition
from karma.errors import ErrorInfo
from karma.interactive import Decision
from karma.lifecycle import ActionState
from karma.meta import RetryPolicy


class UndoStep(BaseModel):
    step: str
    compensation: dict[str, Any] = Field(default_factory=dict)


class Undo(BaseModel):
    """What it takes to undo a transactional action that succeeded (a pipeline rolling
    back): its validated params (secret values sealed) and its steps' compensations."""

    params: dict[str, Any] = Field(default_factory=dict)
    steps: list[UndoStep] = Field(default_factory=list)
    timeout_s: float = 300.0
    heartbeat_timeout_s: float | None = None
    retry: RetryPolicy | None = Field(default=None, description="its compensations' retries")


class ActionOutcome(BaseModel):
    """The end of an action: returned by the workflow on success, carried by its failure."""

    action_id: str
    action_type: str
    state: ActionState
    outputs: dict[str, Any] = Field(default_factory=dict)
    error: ErrorInfo | None = None
    attempts: int = 0
    duration_ms: int = 0
    reason: str = Field(default="", description="why the action was skipped")
    decision: Decision | None = None
    undo: Undo | None = Field(
        default=None, description="a transactional action that succeeded: how to undo it"
    )
    cached_from: str | None = Field(
        default=None, description="answered from the result cache: the action that ran"
    )

    @classmethod
    def of(cls, status: ActionStatus, *, duration_ms: int = 0, reason: str = "") -> ActionOutcome:
        """The outcome as the action's status tells it."""
        return cls(
            action_id=status.action_id,
            action_type=status.action_type,
            state=status.state,
            outputs=status.outputs,
            error=status.error,
            attempts=status.attempt,
            duration_ms=duration_ms,
            reason=reason,
            decision=status.decision,
        )


class ActionStatus(BaseModel):
    """The answer of the `status` query."""

    action_id: str
    action_type: str
    state: ActionState
    attempt: int = 0
    outputs: dict[str, Any] = Field(default_factory=dict)
    error: ErrorInfo | None = None
    transitions: list[Transition] = Field(default_factory=list)
    emitted_seq: int = Field(default=0, description="highest seq acknowledged by Kafka")
    external_workflow_id: str = Field(default="", description="set while waiting for events")
    pending_callbacks: int = Field(default=0, description="external events not handled yet")
    decision_request: dict[str, Any] | None = Field(
        default=None, description="what an interactive action asks a person to decide"
    )
    decision: Decision | None = None
    compensated_steps: list[str] = Field(default_factory=list)
    from_ledger: bool = Field(
        default=False,
        description="read from the ledger: the action ran before and Temporal no longer "
        "holds its workflow",
    )

    @property
    def tenant(self) -> str:
        """The tenant the action was requested for (its transitions' tag)."""
        return self.transitions[0].tags.get("tenant", "") if self.transitions else ""


# The transitions the ledger holds for an action id ([] for none): how an action is still
# known after Temporal forgot its workflow (retention).
PastActions = Callable[[str], Awaitable[Sequence[Transition]]]

log = logging.getLogger(__name__)


async def ran_before(past: PastActions | None, action_id: str) -> list[Transition]:
    """The action's first and last transitions in the ledger ([] if it has none, or there
    is no ledger to ask, or it cannot be read now: then Temporal's own duplicate check is
    all there is)."""
    if past is None:
        return []
    try:
        events = list(await past(action_id))
    except Exception as exc:  # noqa: BLE001 - an unreadable ledger must not stop requests
        log.warning("cannot read the ledger to check %s: %r", action_id, exc)
        return []
    return events[:1] + events[1:][-1:]


class LedgerAnswer(BaseModel):
    """An action known only from its recorded transitions (its workflow is past Temporal's
    retention): what the SDK and a duplicate request are answered with. The first and the
    last transition are enough (and keep the answer small enough for a workflow's
    history)."""

    transitions: list[Transition] = Field(min_length=1)

    @property
    def state(self) -> ActionState:
        states = [e.event_type.state for e in self.transitions if e.event_type.state]
        return states[-1] if states else ActionState.REQUESTED

    @property
    def _last_attrs(self) -> dict[str, Any]:
        return self.transitions[-1].attrs

    def status(self) -> ActionStatus:
        first = self.transitions[0]
        error = self._last_attrs.get("error")
        return ActionStatus(
            action_id=first.action_id,
            action_type=first.tags.get("action", str(first.attrs.get("command", ""))),
            state=self.state,
            attempt=int(self._last_attrs.get("attempt") or 0),
            outputs=dict(self._last_attrs.get("outputs") or {}),
            error=ErrorInfo.model_validate(error) if isinstance(error, dict) else None,
            transitions=self.transitions,
            emitted_seq=self.transitions[-1].seq,
            from_ledger=True,
        )

    def outcome(self) -> ActionOutcome:
        return ActionOutcome.of(
            self.status(),
            duration_ms=int(self._last_attrs.get("duration_ms") or 0),
            reason=str(self._last_attrs.get("reason") or ""),
        )
