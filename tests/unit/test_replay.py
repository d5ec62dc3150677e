"""Stored histories must keep replaying: a behaviour change to ActionWorkflow goes behind
`workflow.patched(...)` (see tests/histories/record.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.histories.record import CORE_4, PIPELINES
from workers.worker import sandboxed_runner
from workflows.action import ActionWorkflow
from workflows.pipeline import PipelineWorkflow

HISTORIES = sorted((Path(__file__).parent.parent / "histories").glob("*.json"))


def test_histories_are_present() -> None:
    assert {p.stem for p in HISTORIES} >= {
        "succeeded",
        "retried",
        "validation_failed",
        "cancelled",
        "event_driven",
        "compensated",
        "skipped",
        "approved",
        "stateful_run1",
        "stateful_run2",
        "cancelled_attempt_reports_emitted",
        "cancelled_during_durable_emit",
        # Recorded by the composed core (contract 2).
        "succeeded_core2",
        "retried_core2",
        "cancelled_core2",
        "event_driven_core2",
        "compensated_core2",
        "approved_core2",
        "stateful_core2_run1",
        "stateful_core2_run2",
        # Only transitions of committed workflow tasks published (contract 3).
        "succeeded_core3",
        "retried_core3",
        "validation_failed_core3",
        "cancelled_core3",
        "event_driven_core3",
        "compensated_core3",
        "skipped_core3",
        "approved_core3",
        "stateful_core3_run1",
        "stateful_core3_run2",
        # An emit is never cancelled half way (contract 4).
        *(f"{name}_core4" for name in CORE_4 if name != "stateful"),
        "stateful_core4_run1",
        "stateful_core4_run2",
        "cancelled_during_slow_emit_core4",
        # PipelineWorkflow
        *PIPELINES,
    }


@pytest.mark.parametrize(
    ("name", "text"), [(p.stem, p.read_text()) for p in HISTORIES], ids=[p.stem for p in HISTORIES]
)
async def test_history_replays(name: str, text: str) -> None:
    replayer = Replayer(
        workflows=[ActionWorkflow, PipelineWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=sandboxed_runner(),
    )
    history = WorkflowHistory.from_json(f"replay-{name}", text)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure
