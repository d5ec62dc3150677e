"""The closed loop on the embedded stack: a simulated supplier drifts, the scan raises a
deviation, a rule requests an action that needs approval, the operator approves it, the
action succeeds; the ledger links deviation, decision and action by the deviation's id,
and acting again on the same deviations requests nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.client import ScheduleActionStartWorkflow

from bridge.entropy import Scanner
from bridge.ledger import Ledger
from bridge.ledger_schema import OBSERVATION_INSERT_COLUMNS
from bridge.rule_engine import RuleEngine
from karma import names
from karma.entropy import simulate
from karma.errors import ActionNotFoundError
from karma.lifecycle import ActionState
from karma.rules import parse_rules, scheduled_event
from karma.settings import EntropySettings
from tests.conftest import unique
from tests.support.waiting import reached
from workers.embedded import EmbeddedKarma
from workers.entropy import keep_rule_schedules

HOUR = timedelta(hours=1)


def rules_for(prefix: str, *, mode: str = "live") -> str:
    return f"""
rules:
  - name: slow-{prefix}
    mode: {mode}
    when:
      deviation: {{metric: [latency_shift], entity: "{prefix}-*", min_surprise_bits: 20}}
    then:
      action: demo.approval
      params: {{change: "ask {{{{ event.entity_id }}}} why {{{{ event.attrs.step }}}} is slow"}}
    guards: {{dedup_window_s: 86400, entity_rate_limit: 5/hour}}
    require_approval: true
"""


def decisions(ledger: Ledger, rule: str) -> list[dict[str, Any]]:
    return ledger.named_rows(
        f"SELECT * FROM {ledger.database}.{names.TABLE_RULE_DECISIONS} FINAL "
        "WHERE rule = %(rule)s ORDER BY decided_at, decision_id",
        {"rule": rule},
    )


async def drifted(karma: EmbeddedKarma, prefix: str, at: datetime) -> list[Any]:
    """Deviations of a simulated latency drift, scanned window by window."""
    scenario = simulate.Scenario(
        entities=2, days=3, anomalies=1, anomaly_after_days=2.2, seed=5, prefix=prefix, start=at
    )
    observations, truth = simulate.observations(scenario)
    assert truth[0].kind == "latency_drift"
    rows = [simulate.row(o) for o in observations]
    await asyncio.to_thread(
        karma.ledger.insert_rows, names.TABLE_OBSERVATIONS, rows, list(OBSERVATION_INSERT_COLUMNS)
    )
    scanner = Scanner(karma.ledger, EntropySettings(training_window_s=2 * 86400))
    first = truth[0].start.replace(minute=0, second=0, microsecond=0)
    found = []
    for n in range(3):
        start = first + n * HOUR
        window = (await asyncio.to_thread(scanner.scan_window, start, start + HOUR))[0]
        found += [d for d in window if d.entity_id.startswith(prefix)]
    shifts = [d for d in found if d.metric == "latency_shift"]
    assert shifts, found
    return shifts


async def test_a_drift_is_acted_on_once_after_approval(
    karma: EmbeddedKarma, report: Callable[[str], None]
) -> None:
    prefix = unique("supplier")
    shifts = await drifted(karma, prefix, datetime(2026, 1, 5, tzinfo=UTC))
    rules = parse_rules(rules_for(prefix))
    engine = RuleEngine(rules, karma.ledger, karma.client)
    events = [d.envelope() for d in shifts]
    first = await engine.handle(events)
    acted = [d for d in first if d.decision == "awaiting_approval"]
    assert len(acted) == 1, [d.as_json() for d in first]  # one per entity and window
    assert {d.decision for d in first} <= {"awaiting_approval", "deduplicated"}
    decision = acted[0]
    handle = karma.client.handle(decision.action_id)
    await reached(handle, ActionState.WAITING, timeout=60)
    status = await handle.status()
    assert status.transitions[0].correlation_id == decision.event_id  # the deviation's id
    assert status.transitions[0].tags["karma.rule"] == rules.rules[0].name
    await handle.approve(by="sre-on-call", reason="supplier notified")
    outcome = await asyncio.wait_for(handle.result(), 60)
    assert outcome.state is ActionState.SUCCEEDED
    assert outcome.outputs["applied"].startswith(f"ask {decision.entity_id} why")
    # A rescan, or the deviations delivered again: no second action.
    again = await engine.handle(events)
    assert {d.decision for d in again} == {"deduplicated"}
    assert all(d.action_id == decision.action_id for d in again)
    rows = await asyncio.to_thread(decisions, karma.ledger, rules.rules[0].name)
    assert len(rows) == len(events)  # one row per (rule, event): a rerun replaced them
    assert {r["action_id"] for r in rows} == {decision.action_id}
    # The ledger links the deviation, the decision and the action's transitions.
    async with asyncio.timeout(30):
        while True:
            ledger_rows = await asyncio.to_thread(karma.ledger.transitions, [decision.action_id])
            if ledger_rows and ledger_rows[-1].event_type == "action.succeeded":
                break
            await asyncio.sleep(0.2)
    stored = await asyncio.to_thread(
        Scanner(karma.ledger, karma.settings.entropy).deviations,
        entity_id=decision.entity_id,
        limit=100,
    )
    assert decision.event_id in {r["deviation_id"] for r in stored}
    report(
        f"closed loop: {len(events)} deviation(s) -> 1 action awaiting approval -> approved -> "
        f"SUCCEEDED; rerun: {len(again)} deduplicated"
    )


async def test_dry_run_and_rate_limits_are_recorded_and_request_nothing(
    karma: EmbeddedKarma,
) -> None:
    prefix = unique("dry")
    shifts = await drifted(karma, prefix, datetime(2026, 2, 5, tzinfo=UTC))
    dry = parse_rules(rules_for(prefix, mode="dry-run"))
    decided = await RuleEngine(dry, karma.ledger, karma.client).handle(
        [d.envelope() for d in shifts]
    )
    assert decided and {d.decision for d in decided} == {"dry_run"}
    assert decided[0].params["change"].startswith(f"ask {prefix}-")
    for d in decided:  # nothing was requested
        with pytest.raises(ActionNotFoundError):
            await karma.client.handle(d.action_id).status()
    # A limit of one action per hour and entity, two windows' deviations of one entity:
    text = rules_for(prefix).replace("dedup_window_s: 86400", "dedup_window_s: 60")
    text = text.replace("entity_rate_limit: 5/hour", "entity_rate_limit: 1/hour")
    limited = await RuleEngine(parse_rules(text), karma.ledger, karma.client).handle(
        [d.envelope() for d in shifts]
    )
    per_entity: dict[str, list[str]] = {}
    for d in limited:
        per_entity.setdefault(d.entity_id, []).append(d.decision)
    for entity, kinds in per_entity.items():
        assert kinds[0] == "awaiting_approval" and set(kinds[1:]) <= {"rate_limited"}, entity
    for d in limited:
        if d.decision == "awaiting_approval":
            await karma.client.handle(d.action_id).cancel()


async def test_schedule_triggers_fire_once_per_firing_and_keep_their_schedules(
    karma: EmbeddedKarma,
) -> None:
    name = unique("nightly")
    text = f"""
rules:
  - name: {name}
    when: {{schedule: {{cron: "0 3 1 1 *"}}}}
    then: {{action: log, params: {{message: "fired at {{{{ event.attrs.scheduled_at }}}}"}}}}
"""
    rules = parse_rules(text)
    engine = RuleEngine(rules, karma.ledger, karma.client)
    at = datetime(2026, 1, 1, 3, tzinfo=UTC)
    first = await engine.handle([scheduled_event(name, at)])
    assert [d.decision for d in first] == ["fired"]
    outcome = await asyncio.wait_for(karma.client.handle(first[0].action_id).result(), 60)
    assert outcome.state is ActionState.SUCCEEDED
    again = await engine.handle([scheduled_event(name, at)])  # the same firing delivered again
    assert [d.decision for d in again] == ["deduplicated"]
    # The Temporal Schedule of the trigger: created with the cron, deleted with the rule.
    schedule_id = f"{names.RULE_SCHEDULE_PREFIX}{name}"
    await keep_rule_schedules(karma.temporal, karma.settings, rules)
    described = await karma.temporal.get_schedule_handle(schedule_id).describe()
    # The server keeps a cron expression as a calendar: 03:00 on the first of January.
    (calendar,) = described.schedule.spec.calendars
    assert [(r.start, r.end) for r in calendar.hour] == [(3, 3)]
    assert [(r.start, r.end) for r in calendar.minute] == [(0, 0)]
    assert [(r.start, r.end) for r in calendar.day_of_month] == [(1, 1)]
    assert [(r.start, r.end) for r in calendar.month] == [(1, 1)]
    assert isinstance(described.schedule.action, ScheduleActionStartWorkflow)
    assert described.schedule.action.workflow == names.RULE_TRIGGER_WORKFLOW
    await keep_rule_schedules(karma.temporal, karma.settings, parse_rules("rules: []"))
    ids = [s.id async for s in await karma.temporal.list_schedules()]
    assert schedule_id not in ids
