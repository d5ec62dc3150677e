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
from datetime import datetime, timedelta

from temporalio.client import Client

from bridge.emit import TransitionPublisher
from bridge.ledger import Ledger
from karma import names
from karma.envelope import Transition
from karma.ids import WORKFLOW_ID_PREFIX, action_id_from_workflow_id
from karma.status import ActionStatus

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
PUBLISH_TIMEOUT_SECONDS = 30.0
CONCURRENT_QUERIES = 16
QUERY_TIMEOUT = timedelta(seconds=10)


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
    runs: dict[str, list[str]] = {}
    async for execution in temporal.list_workflows(visibility_query(since)):
        if execution.id.startswith(WORKFLOW_ID_PREFIX):  # not an action started by Karma
            runs.setdefault(execution.id, []).append(execution.run_id or "")
    report.actions = len(runs)
    action_ids = {wid: action_id_from_workflow_id(wid) for wid in runs}
    complete = await asyncio.to_thread(ledger.complete, list(action_ids.values()))
    report.complete = len(complete)
    todo = {wid: runs[wid] for wid, action_id in action_ids.items() if action_id not in complete}
    report.checked = len(todo)
    if todo:
        progress(f"reconcile: reading the transitions of {len(todo)} action(s)…")
    limit = asyncio.Semaphore(CONCURRENT_QUERIES)

    async def read(workflow_id: str) -> tuple[str, dict[int, Transition]]:
        async with limit:
            return action_ids[workflow_id], await _recorded(
                temporal, workflow_id, todo[workflow_id], report
            )

    recorded = {a: events for a, events in await asyncio.gather(*map(read, todo)) if events}
    if caught_up is not None and recorded and await caught_up() is False:
        log.warning(
            "reconcile: the ledger did not catch up with Kafka in time; publishing what it "
            "lacks anyway (the ledger keeps each transition once)"
        )
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
    run_ids: list[str],
    report: ReconcileReport,
) -> dict[int, Transition]:
    """The transitions the action's runs recorded and published (a running one may hold
    transitions it has not published yet: it will)."""
    events: dict[int, Transition] = {}
    for run_id in run_ids:
        handle = temporal.get_workflow_handle(workflow_id, run_id=run_id or None)
        try:
            status: ActionStatus = await handle.query(
                names.STATUS_QUERY, result_type=ActionStatus, rpc_timeout=QUERY_TIMEOUT
            )
        except Exception as exc:  # noqa: BLE001 - one unreadable run must not stop the rest
            log.warning("reconcile: cannot read %s/%s: %s", workflow_id, run_id, exc)
            report.unreadable.append(workflow_id)
            continue
        for event in status.transitions:
            if event.seq <= status.emitted_seq:
                events.setdefault(event.seq, event)
    return events


async def _publish(publisher: TransitionPublisher, events: list[Transition]) -> int:
    acked = await publisher.publish(events, timeout=PUBLISH_TIMEOUT_SECONDS)
    return sum(1 for event in events if event.seq <= acked)
