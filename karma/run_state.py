"""ActionWorkflow's whole state: one model, read by the `status` query and carried whole
into the next run by continue-as-new (pure, safe in workflow code).

The first fields keep the names of the model continue-as-new carried before this one
(`Resume`), so a continued run recorded then still loads.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Self

from pydantic import AliasChoices, BaseModel, Field, model_validator

from karma.envelope import Envelope, Transition
from karma.errors import ErrorInfo
from karma.interactive import AwaitDecision, Decision
from karma.lifecycle import ActionState


class CallbackWait(BaseModel):
    """An event-driven action's wait: whom it waits on and the callbacks not judged yet."""

    external_id: str = ""
    inbox: list[Envelope] = Field(default_factory=list)
    seen: list[str] = Field(default_factory=list, description="event ids already taken")


class RunState(BaseModel):
    """Everything ActionWorkflow knows about its action."""

    last_seq: int = Field(default=0, ge=0, description="seqs up to this came with earlier runs")
    state: ActionState = ActionState.REQUESTED
    started_at: datetime | None = Field(default=None, description="the first run's start")
    attempt: int = 0
    iterations: int = 0
    data: dict[str, Any] = Field(default_factory=dict, description="a stateful executor's state")
    data_version: int = 1
    outputs: dict[str, Any] = Field(default_factory=dict)
    transitions: list[Transition] = Field(
        default_factory=list,
        validation_alias=AliasChoices("transitions", "recent"),
        description="this run's transitions, after the previous run's",
    )
    emitted_seq: int = Field(default=0, description="highest seq Kafka acknowledged")
    error: ErrorInfo | None = None
    output_names: list[str] = Field(default_factory=list)
    callbacks: CallbackWait = Field(default_factory=CallbackWait)
    question: AwaitDecision | None = None
    decision: Decision | None = None
    compensated: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _earlier_runs_published(self) -> Self:
        # A run continues only after its predecessor published everything it recorded.
        self.emitted_seq = max(self.emitted_seq, self.last_seq)
        return self

    def continued(self) -> RunState:
        """The state the next run starts from: this run's transitions are published."""
        last = self.transitions[-1].seq if self.transitions else self.last_seq
        return self.model_copy(
            update={
                "last_seq": last,
                "transitions": [e for e in self.transitions if e.seq > self.last_seq],
                "emitted_seq": last,
                "callbacks": CallbackWait(),  # none are for a stateful action: do not pile up
            }
        )
