"""The entropy scan's worker and its Temporal Schedule, in a process that reads the ledger
(`karma dev`, `karma service`)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError
from temporalio.worker import Worker

from activities.entropy import EntropyActivities
from bridge.entropy import Scanner
from bridge.ledger import Ledger
from bridge.rule_engine import RuleEngine
from karma import names
from karma.client import KarmaClient
from karma.component import Component
from karma.rules import Rule, RuleSet, check_actions, load_rules
from karma.settings import Settings
from karma.workflow_io import EntropyScanInput, RuleFiring
from workers.worker import workflow_runner
from workflows.entropy_scan import EntropyScanWorkflow
from workflows.rule_trigger import RuleTriggerWorkflow


def scan_schedule(settings: Settings) -> Schedule:
    """A scan every `entropy.schedule_interval_s`; one at a time (a slow scan is not
    overtaken: the next one resumes where it ended)."""
    every = timedelta(seconds=settings.entropy.schedule_interval_s)
    return Schedule(
        action=ScheduleActionStartWorkflow(
            names.ENTROPY_SCAN_WORKFLOW,
            EntropyScanInput(),
            id=names.ENTROPY_SCAN_SCHEDULE,
            task_queue=settings.entropy.task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def keep_schedule(client: Client, settings: Settings) -> None:
    """Create the scan's schedule, or bring an existing one up to the settings."""
    await _create_or_update(client, names.ENTROPY_SCAN_SCHEDULE, scan_schedule(settings))


def rule_schedule(settings: Settings, rule: Rule) -> Schedule:
    assert rule.when.schedule is not None
    return Schedule(
        action=ScheduleActionStartWorkflow(
            names.RULE_TRIGGER_WORKFLOW,
            RuleFiring(rule=rule.name),
            id=f"{names.RULE_SCHEDULE_PREFIX}{rule.name}",
            task_queue=settings.entropy.task_queue,
        ),
        spec=ScheduleSpec(cron_expressions=[rule.when.schedule.cron]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def keep_rule_schedules(client: Client, settings: Settings, rules: RuleSet) -> None:
    """One Temporal Schedule per schedule trigger, up to date; those of rules no longer in
    the file are deleted."""
    wanted = {f"{names.RULE_SCHEDULE_PREFIX}{r.name}": r for r in rules.scheduled}
    for schedule_id, rule in wanted.items():
        await _create_or_update(client, schedule_id, rule_schedule(settings, rule))
    async for listed in await client.list_schedules():
        if listed.id.startswith(names.RULE_SCHEDULE_PREFIX) and listed.id not in wanted:
            await client.get_schedule_handle(listed.id).delete()


async def _create_or_update(client: Client, schedule_id: str, schedule: Schedule) -> None:
    """Create a schedule, or bring an existing one up to date, keeping its state (an
    operator's pause and note stay)."""
    try:
        await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:

        def update(current: ScheduleUpdateInput) -> ScheduleUpdate:
            schedule.state = current.description.schedule.state
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(schedule_id).update(update)


async def drop_schedule(client: Client, schedule_id: str) -> None:
    with contextlib.suppress(RPCError):  # none to drop
        await client.get_schedule_handle(schedule_id).delete()


SCAN_RULES = frozenset({"deviation", "schedule"})  # observation rules: the bridge's


class EntropyWorker(Component):
    """Runs EntropyScanWorkflow and `scan_entropy` on `entropy.task_queue`, with its own
    connection to the ledger, and keeps the schedule."""

    def __init__(
        self, client: Client, settings: Settings, karma: KarmaClient | None = None
    ) -> None:
        self._client = client
        self._settings = settings
        self._ledger: Ledger | None = None
        self._rules_ledger: Ledger | None = None  # the rule engine's own connection
        self._engine: RuleEngine | None = None
        if karma is not None and settings.entropy.rules_file is not None:
            # Refused at start-up, naming the field: a bad rules file never half-applies.
            self._rules: RuleSet | None = load_rules(settings.entropy.rules_file)
            check_actions(self._rules, karma.registry)
        else:
            self._rules = None
        self._karma = karma
        self._activities = EntropyActivities(self._scanner, settings.kafka, self._rule_engine)
        self._worker = Worker(
            client,
            task_queue=settings.entropy.task_queue,
            workflows=[EntropyScanWorkflow, RuleTriggerWorkflow],
            activities=[self._activities.scan_entropy, self._activities.fire_rule],
            workflow_runner=workflow_runner(settings.temporal.workflow_sandbox),
            graceful_shutdown_timeout=timedelta(seconds=5),
        )
        self._task: asyncio.Task[None] | None = None

    def _engine_ledger(self) -> Ledger:
        if self._rules_ledger is None:
            self._rules_ledger = Ledger.open(
                self._settings.clickhouse_dsn, self._settings.clickhouse.database
            )
        return self._rules_ledger

    def _scanner(self) -> Scanner:
        if self._ledger is None:
            self._ledger = Ledger.open(
                self._settings.clickhouse_dsn, self._settings.clickhouse.database
            )
        return Scanner(self._ledger, self._settings.entropy)

    def _rule_engine(self) -> RuleEngine | None:
        if self._rules is None or self._karma is None:
            return None
        if self._engine is None:
            self._engine = RuleEngine(
                self._rules, self._engine_ledger(), self._karma, kinds=SCAN_RULES
            )
        return self._engine

    async def _start(self) -> None:
        if self._settings.entropy.schedule:
            await keep_schedule(self._client, self._settings)
        else:
            await drop_schedule(self._client, names.ENTROPY_SCAN_SCHEDULE)
        # Without rules here, schedules left by an earlier rules file are dropped.
        await keep_rule_schedules(self._client, self._settings, self._rules or RuleSet())
        self._task = asyncio.create_task(self._worker.run(), name="worker:entropy")

    async def _stop(self) -> None:
        if self._task is not None:
            await self._worker.shutdown()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._activities.stop()
        for ledger in (self._ledger, self._rules_ledger):
            if ledger is not None:
                ledger.close()
        self._ledger = self._rules_ledger = None

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)
