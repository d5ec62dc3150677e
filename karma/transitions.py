"""The transitions of one action: recorded in seq order, and how far Kafka acknowledged them.

Pure bookkeeping over the workflow's `RunState`, so it replays deterministically and the
state stays one object.
"""

from __future__ import annotations

from datetime import datetime

from karma.envelope import Transition, TransitionAttrs
from karma.lifecycle import ActionState, EventType
from karma.request import ActionRequest
from karma.run_state import RunState


class TransitionLog:
    """Records transitions with monotonic seq numbers and tracks acknowledged ones."""

    def __init__(self, request: ActionRequest, run: RunState) -> None:
        self._request = request
        self._run = run

    @property
    def transitions(self) -> list[Transition]:
        return list(self._run.transitions)

    @property
    def state(self) -> ActionState:
        return self._run.state

    @property
    def last_seq(self) -> int:
        return self._run.transitions[-1].seq if self._run.transitions else self._run.last_seq

    def record(self, event_type: EventType, ts: datetime, attrs: TransitionAttrs) -> Transition:
        """Append the next transition; terminal states accept no further transitions."""
        if self._run.state.is_terminal and self._run.transitions:
            raise RuntimeError(f"action {self._request.action_id} is already {self._run.state}")
        request = self._request
        event = Transition(
            ts=ts,
            event_type=event_type,
            action_id=request.action_id,
            seq=self.last_seq + 1,
            entity_id=request.entity_id,
            correlation_id=request.correlation_id,
            idempotency_key=request.idempotency_key,
            source=request.event_source,
            tags=request.event_tags,
            attrs=attrs.as_attrs(),
        )
        self._run.transitions.append(event)
        if event_type.state is not None:
            self._run.state = event_type.state
        return event

    def pending(self) -> list[Transition]:
        """Transitions Kafka has not acknowledged yet, in seq order."""
        return [e for e in self._run.transitions if e.seq > self._run.emitted_seq]

    def acknowledge(self, upto_seq: int) -> None:
        """Kafka acknowledged every transition up to and including `upto_seq`."""
        self._run.emitted_seq = max(self._run.emitted_seq, min(upto_seq, self.last_seq))
