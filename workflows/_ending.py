"""How an action ends: its terminal transition and what it carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from karma.errors import ErrorInfo
    from karma.lifecycle import EventType
    from karma.status import Undo


@dataclass
class Ending:
    """The terminal transition to record; `at` is a replay-stable time when one is known."""

    event_type: EventType
    outputs: dict[str, Any] = field(default_factory=dict)
    error: ErrorInfo | None = None
    at: datetime | None = None
    reason: str = ""  # why the action was skipped
    undo: Undo | None = None  # a transactional action that succeeded
    cached_from: str | None = None  # answered from the result cache


def millis(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)
