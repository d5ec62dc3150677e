"""The demo's closed loop: a simulated supplier's response times drift; the entropy scan
(EntropyScanWorkflow) raises a deviation; a rule requests a change that needs approval;
the demo approves it; the action succeeds; a second scan of the same windows acts no more.
The ledger shows observation -> deviation -> rule decision -> action, linked by the
deviation's id (the action's correlation id).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from karma import names
from karma.entropy import simulate
from karma.lifecycle import ActionState, EventType
from karma.workflow_io import EntropyScanInput, EntropyScanOutput

if TYPE_CHECKING:
    from workers.embedded import EmbeddedKarma

PREFIX = "supplier"
DRIFT_HOURS = 3
RULES = """\
rules:
  - name: slow-supplier
    description: a supplier answering slower than it learned to is asked why, once a day
    when:
      deviation: {metric: [latency_shift], entity: "supplier-*", min_surprise_bits: 20}
    then:
      action: demo.approval
      params:
        change: "notify {{ event.entity_id }}: {{ event.attrs.step }} takes {{
          (event.attrs.observed_value / 1000) | round(1) }} s (normal {{
          (event.attrs.baseline_value / 1000) | round(1) }} s)"
    guards: {dedup_window_s: 86400, entity_rate_limit: 2/hour}
    require_approval: true
"""
INGEST_TIMEOUT = 120.0


def write_rules(data_dir: Path) -> Path:
    path = data_dir / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    return path


def _scenario(now: datetime) -> simulate.Scenario:
    days = 2.0
    return simulate.Scenario(
        entities=3,
        days=days,
        anomalies=1,
        anomaly_after_days=days - DRIFT_HOURS / 24,  # the drift covers the last hours
        anomaly_hours=DRIFT_HOURS,
        seed=2,
        prefix=PREFIX,
        start=now - timedelta(days=days),
    )


async def run_loop(karma: EmbeddedKarma) -> int:
    """The scene; 0 when every step happened as it should."""
    now = datetime.now(UTC).replace(microsecond=0)
    observations, truth = simulate.observations(_scenario(now))
    print(
        f"\nClosed loop: {len(observations)} observations of 3 suppliers over 2 days, "
        f"published to {karma.settings.kafka.topics.observations}; {truth[0].entity_id}'s "
        f"'{truth[0].step}' step slows down {DRIFT_HOURS} h ago…",
        flush=True,
    )
    await _publish(karma, [simulate.envelope(o) for o in observations])
    await _ingested(karma, len(observations))
    first = await _scan(karma, now)
    for line in _deviation_lines(first):
        print(line)
    asked = [d for d in first.decisions if d["decision"] == "awaiting_approval"]
    print(
        f"rule decisions: {', '.join(sorted({d['decision'] for d in first.decisions})) or 'none'}"
    )
    if len(asked) != 1:
        print(f"expected one action awaiting approval, got {len(asked)}")
        return 1
    handle = karma.client.handle(asked[0]["action_id"])
    status = await handle.status()
    print(f"  {handle.action_id} {status.state}: {status.decision_request}")
    await _until_waiting(handle)
    await handle.approve(by="karma-demo", reason="supplier notified")
    outcome = await asyncio.wait_for(handle.result(), 60)
    print(f"  approved by karma-demo: {outcome.state} ({outcome.outputs.get('applied')})")
    second = await _scan(karma, now)
    again = sorted({d["decision"] for d in second.decisions})
    print(f"second scan of the same windows: rule decisions {', '.join(again)} (nothing new)")
    ok = outcome.state is ActionState.SUCCEEDED and again == ["deduplicated"]
    print(_linked(asked[0], handle.action_id))
    return 0 if ok else 1


async def _publish(karma: EmbeddedKarma, documents: list[dict[str, Any]]) -> None:
    from bridge.producer import LazyProducer

    producer = LazyProducer(karma.settings.kafka)
    try:
        kafka = await producer.get()
        for document in documents:
            await kafka.send(
                karma.settings.kafka.topics.observations,
                key=document["entity_id"].encode(),
                value=json.dumps(document, separators=(",", ":")).encode(),
            )
        await kafka.flush()
    finally:
        await producer.stop()


async def _ingested(karma: EmbeddedKarma, expected: int) -> None:
    """Wait until the bridge wrote every observation to ClickHouse."""
    sql = (
        f"SELECT count() FROM {karma.ledger.database}.{names.TABLE_OBSERVATIONS} "
        "WHERE entity_id LIKE %(prefix)s"
    )
    deadline = asyncio.get_running_loop().time() + INGEST_TIMEOUT
    while True:
        rows = await asyncio.to_thread(karma.ledger.rows, sql, {"prefix": f"{PREFIX}-%"})
        if rows[0][0] >= expected:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"the bridge stored {rows[0][0]} of {expected} observations")
        await asyncio.sleep(0.3)


async def _scan(karma: EmbeddedKarma, now: datetime) -> EntropyScanOutput:
    since = now - timedelta(hours=DRIFT_HOURS)
    out: EntropyScanOutput = await karma.temporal.execute_workflow(
        names.ENTROPY_SCAN_WORKFLOW,
        EntropyScanInput(since=since, until=now),
        id=f"karma-demo-scan-{uuid.uuid4().hex[:8]}",
        task_queue=karma.settings.entropy.task_queue,
        result_type=EntropyScanOutput,
    )
    print(
        f"entropy scan (EntropyScanWorkflow): {len(out.windows)} window(s), "
        f"{out.observations} observations, {out.deviations} deviation(s)",
        flush=True,
    )
    return out


def _deviation_lines(out: EntropyScanOutput) -> list[str]:
    lines = []
    for d in out.top[:5]:
        lines.append(
            f"  {d['surprise_bits']:7.1f} bits  {d['entity_id']} {d['step']} {d['metric']}: "
            f"median {d['observed_value'] / 1000:.1f} s against {d['baseline_value'] / 1000:.1f} s"
        )
    return lines


async def _until_waiting(handle: Any) -> None:
    async with asyncio.timeout(60):
        async for event in handle.transitions(poll_interval=0.2):
            if event.event_type is EventType.WAITING:
                return


def _linked(decision: dict[str, Any], action_id: str) -> str:
    return (
        f"linked by correlation id {decision['event_id']}: deviation (table deviations) -> "
        f"rule decision {decision['decision_id']} (rule_decisions) -> action {action_id} "
        "(action_events)"
    )
