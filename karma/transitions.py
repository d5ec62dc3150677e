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
        self._events: list[ActionEvent] = []
        self._emitted_seq = 0
        self.state = ActionState.REQUESTED

    @property
    def events(self) -> list[ActionEvent]:
        return list(self._events)

    @property
    def emitted_seq(self) -> int:
        return self._emitted_seq

    @property
    def last_seq(self) -> int:
        return self._events[-1].seq if self._events else 0

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

    def pending(self) -> list[ActionEvent]:
        """Transitions Kafka has not acknowledged yet, in seq order."""
        return [e for e in self._events if e.seq > self._emitted_seq]

    def acknowledge(self, upto_seq: int) -> None:
        """Kafka acknowledged every transition up to and including `upto_seq`."""
        self._emitted_seq = max(self._emitted_seq, min(upto_seq, self.last_seq))
