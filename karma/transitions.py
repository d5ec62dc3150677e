"""The outbox of one action: transitions in seq order and how far Kafka has acknowledged them.

Pure bookkeeping, so the workflow can keep it in its state and replay it deterministically.
"""

from __future__ import annotations

from datetime import datetime

from karma.events import ActionEvent, TransitionAttrs
from karma.lifecycle import ActionState, EventType
from karma.request import ActionRequest


class TransitionLog:
    """Records transitions with monotonic seq numbers and tracks acknowledged ones."""

    def __init__(self, request: ActionRequest) -> None:
        self._request = request
        resume = request.resume
        self._events: list[ActionEvent] = list(resume.recent) if resume else []
        # A continued run goes on from the seq and state its previous run ended with; the
        # previous run published everything it recorded before continuing.
        self._base_seq = resume.last_seq if resume else 0
        self._emitted_seq = self._base_seq
        self.state = resume.state if resume else ActionState.REQUESTED

    @property
    def events(self) -> list[ActionEvent]:
        return list(self._events)

    @property
    def emitted_seq(self) -> int:
        return self._emitted_seq

    @property
    def last_seq(self) -> int:
        return self._events[-1].seq if self._events else self._base_seq

    def record(self, event_type: EventType, ts: datetime, attrs: TransitionAttrs) -> ActionEvent:
        """Append the next transition; terminal states accept no further transitions."""
        if self.state.is_terminal and self._events:
            raise RuntimeError(f"action {self._request.action_id} is already {self.state}")
        request = self._request
        event = ActionEvent(
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
        self._events.append(event)
        if event_type.state is not None:
            self.state = event_type.state
        return event

    def since(self, seq: int) -> list[ActionEvent]:
        """Transitions after `seq`."""
        return [e for e in self._events if e.seq > seq]

    def pending(self) -> list[ActionEvent]:
        """Transitions Kafka has not acknowledged yet, in seq order."""
        return [e for e in self._events if e.seq > self._emitted_seq]

    def acknowledge(self, upto_seq: int) -> None:
        """Kafka acknowledged every transition up to and including `upto_seq`."""
        self._emitted_seq = max(self._emitted_seq, min(upto_seq, self.last_seq))
