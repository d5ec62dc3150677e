"""Making the ledger hold every transition Temporal recorded, after anything went wrong.

Temporal is the source of truth. An in-memory broker that dies takes with it transitions
Kafka had acknowledged but the sink had not written yet; the workflows will not publish
them again (Kafka acknowledged them). Reconciling lists the actions in Temporal's
visibility, skips those the ledger holds completely (seqs 1..n, the last one terminal),
asks the others for their transitions (the `status` query; a worker must be polling), waits
for the sink to catch up with Kafka, and publishes what the ledger still lacks. The ledger
deduplicates on event_id, so reconciling twice, or while transitions are still on their
way, never duplicates a row.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from temporalio.client import Client, WorkflowExecutionStatus

from bridge.emit import TransitionPublisher
from bridge.ledger import Ledger
from karma import names
from karma.events import ActionEvent
from karma.ids import action_id_from_workflow_id
from karma.status import ActionStatus

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
PUBLISH_TIMEOUT_SECONDS = 30.0
PROGRESS_EVERY = 200


@dataclass
class ReconcileReport:
    """What reconciling found and did (the counts `karma ledger reconcile` prints)."""

    actions: int = 0
    complete: int = 0
    checked: int = 0
    missing: int = 0
    published: int = 0
    unreadable: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (
            f"{self.actions} action(s) in Temporal: {self.complete} complete in the ledger, "
            f"{self.checked} checked; {self.missing} transition(s) missing, "
            f"{self.published} published again"
        )
        if self.unreadable:
            text += f"; {len(self.unreadable)} could not be read ({', '.join(self.unreadable[:5])})"
        return text


def visibility_query(since: datetime | None) -> str:
    """Every action Temporal holds, or those running now or closed since `since`."""
    query = f"WorkflowType = '{names.ACTION_WORKFLOW}'"
    if since is not None:
        stamp = since.isoformat().replace("+00:00", "Z")
        query += f" AND (ExecutionStatus = 'Running' OR CloseTime >= '{stamp}')"
    return query


async def reconcile(
    temporal: Client,
    ledger: Ledger,
    publisher: TransitionPublisher,
    *,
    since: datetime | None = None,
    caught_up: Callable[[], Awaitable[object]] | None = None,
    progress: Progress = lambda message: None,
) -> ReconcileReport:
    """Publish again the transitions Temporal recorded that the ledger lacks.

    Args:
        ledger: read off the event loop (its client blocks).
        caught_up: returns once the sink has written what is on Kafka now, so that what
            is merely on its way is not published twice.
    """
    report = ReconcileReport()
    runs: dict[str, list[tuple[str, bool]]] = {}
    async for execution in temporal.list_workflows(visibility_query(since)):
        running = execution.status is WorkflowExecutionStatus.RUNNING
        runs.setdefault(execution.id, []).append((execution.run_id or "", running))
    report.actions = len(runs)
    action_ids = {wid: action_id_from_workflow_id(wid) for wid in runs}
    complete = await asyncio.to_thread(ledger.complete, list(action_ids.values()))
    report.complete = len(complete)
    recorded: dict[str, dict[int, ActionEvent]] = {}
    for workflow_id, executions in runs.items():
        action_id = action_ids[workflow_id]
        if action_id in complete:
            continue
        report.checked += 1
        if report.checked % PROGRESS_EVERY == 0:
            progress(f"reconcile: {report.checked} action(s) checked…")
        events = await _recorded(temporal, workflow_id, executions, report)
        if events:
            recorded[action_id] = events
    if caught_up is not None and recorded:
        await caught_up()
    held = await asyncio.to_thread(ledger.seqs, list(recorded))
    for action_id, events in recorded.items():
        missing = [events[seq] for seq in sorted(events) if seq not in held.get(action_id, set())]
        if not missing:
            continue
        report.missing += len(missing)
        report.published += await _publish(publisher, missing)
    log.info("reconcile: %s", report.summary())
    return report


async def _recorded(
    temporal: Client,
    workflow_id: str,
    executions: list[tuple[str, bool]],
    report: ReconcileReport,
) -> dict[int, ActionEvent]:
    """The transitions the action's runs recorded and published (a running one may hold
    transitions it has not published yet: it will)."""
    events: dict[int, ActionEvent] = {}
    for run_id, _running in executions:
        handle = temporal.get_workflow_handle(workflow_id, run_id=run_id or None)
        try:
            status: ActionStatus = await handle.query(names.STATUS_QUERY, result_type=ActionStatus)
        except Exception as exc:  # noqa: BLE001 - one unreadable run must not stop the rest
            log.warning("reconcile: cannot read %s/%s: %s", workflow_id, run_id, exc)
            report.unreadable.append(workflow_id)
            continue
        for event in status.transitions:
            if event.seq <= status.emitted_seq:
                events.setdefault(event.seq, event)
    return events


async def _publish(publisher: TransitionPublisher, events: list[ActionEvent]) -> int:
    acked = await publisher.publish(events, timeout=PUBLISH_TIMEOUT_SECONDS)
    return sum(1 for event in events if event.seq <= acked)
