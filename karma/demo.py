"""`karma demo`: the basic outcomes of an action, read back from the ClickHouse ledger.

Starts the embedded stack on free ports in a temporary directory, runs a success, a flaky
action that succeeds after retries, a permanent failure, a validation failure, a cancelled
delay, an event-driven job requested through Kafka that the reference jobs service
completes through Kafka callbacks, a job that never reports back (timed out), a saga whose
last step fails (its completed steps are compensated), a change that waits for approval
and is approved, and a stateful drain that continues as new; waits
until the bridge has written every transition, prints the ledger and checks that each
transition is there exactly once. Then the analytics, and the closed loop
(`karma.demo_loop`): drift, deviation, rule, approval, action; and the shipped release
pipeline, planned and run (`karma.demo_pipeline`).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer

from karma.cli.render import ledger_line
from karma.client import ActionHandle
from karma.demo_loop import run_loop, write_rules
from karma.demo_pipeline import run_pipeline_scene
from karma.embedded.stack import with_free_ports
from karma.envelope import Envelope, EventSource
from karma.errors import ActionNotFoundError
from karma.ids import action_id_for_key, event_id_for
from karma.kafka_config import producer_kwargs
from karma.lifecycle import ActionState, EventType
from karma.settings import get_settings
from karma.status import ActionOutcome

if TYPE_CHECKING:
    from workers.embedded import EmbeddedKarma

LEDGER_TIMEOUT = 60.0


@dataclass(frozen=True)
class Scenario:
    title: str
    action_type: str
    params: dict[str, Any]
    expected: ActionState
    validate: bool = True
    cancel_once_started: bool = False
    via_kafka: bool = False  # published on actions.requested for the bridge's ingress
    approve_when_asked: bool = False


@dataclass
class Ran:
    scenario: Scenario
    handle: ActionHandle
    outcome: ActionOutcome
    event_ids: list[str] = field(default_factory=list)


def scenarios(base_url: str) -> list[Scenario]:
    return [
        Scenario("success", "http_request", {"url": f"{base_url}/health"}, ActionState.SUCCEEDED),
        Scenario("flaky", "demo.flaky", {"failures": 2}, ActionState.SUCCEEDED),
        Scenario("permanent", "http_request", {"url": f"{base_url}/missing"}, ActionState.FAILED),
        # Sent without client-side validation, as a Kafka producer would: the worker rejects it.
        Scenario(
            "validation",
            "delay",
            {"seconds": -5, "speed": "fast"},
            ActionState.FAILED,
            validate=False,
        ),
        Scenario(
            "cancelled", "delay", {"seconds": 300}, ActionState.CANCELLED, cancel_once_started=True
        ),
        Scenario(
            "job",
            "demo.job",
            {"steps": 2, "step_seconds": 0.3},
            ActionState.SUCCEEDED,
            via_kafka=True,
        ),
        Scenario(
            "timeout",
            "demo.job",
            {"steps": 0, "outcome": "silent", "wait_seconds": 2},
            ActionState.TIMED_OUT,
        ),
        Scenario(
            "saga",
            "demo.provision",
            {"name": "svc-demo", "fail_at": "activate"},
            ActionState.FAILED,
        ),
        Scenario(
            "approval",
            "demo.approval",
            {"change": "scale web to 4"},
            ActionState.SUCCEEDED,
            approve_when_asked=True,
        ),
        # References checked by the inventory before acceptance; the note is a template.
        Scenario(
            "reference",
            "demo.scale",
            {"cluster": "prod-eu", "model": "llama-3-8b", "replicas": 3},
            ActionState.SUCCEEDED,
        ),
        Scenario(
            "dangling", "demo.scale", {"cluster": "prod-mars", "model": "gpt-x"}, ActionState.FAILED
        ),
        Scenario(
            "stateful",
            "demo.drain",
            {"total": 12, "batch": 2, "pause_seconds": 0.1},
            ActionState.SUCCEEDED,
        ),
    ]


async def run_demo(*, keep: bool = False) -> int:
    data_dir = Path(tempfile.mkdtemp(prefix="karma-demo-"))
    report_path = get_settings().data_dir / "demo-report.html"
    settings = with_free_ports(get_settings(), data_dir)
    # The demo's jobs and inventory are the reference service it starts, whatever is
    # configured.
    services = {k: v for k, v in settings.services.items() if k not in ("jobs", "inventory")}
    # The closed loop's rule; its scans are started by the demo, not the schedule.
    entropy = settings.entropy.model_copy(
        update={"rules_file": write_rules(data_dir), "schedule": False}
    )
    settings = settings.model_copy(update={"services": services, "entropy": entropy})
    from workers.embedded import EmbeddedKarma  # worker code only when the demo runs

    try:
        async with EmbeddedKarma(settings) as karma:
            assert karma.reference_service is not None, "the demo runs its own jobs service"
            print(
                f"Karma demo: embedded stack in {data_dir}\n"
                f"  Temporal {settings.temporal.address} "
                f"(Web UI {karma.servers.temporal.ui_url}), "
                f"Kafka {settings.kafka.bootstrap_servers}, "
                f"ClickHouse {settings.clickhouse_dsn}, "
                f"jobs service {karma.reference_service.url}\n",
                flush=True,
            )
            ran = await _run_all(karma, scenarios(karma.reference_service.url))
            await _wait_for_ledger(karma.ledger, ran)
            checked = _report(karma.ledger, ran)
            await asyncio.to_thread(_analytics, karma.ledger, report_path)
            looped = await run_loop(karma)
            piped = await run_pipeline_scene(karma)
            return checked or looped or piped
    finally:
        if keep:
            print(f"\ndata kept in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


async def _run_all(karma: EmbeddedKarma, todo: list[Scenario]) -> list[Ran]:
    print(f"Running {len(todo)} actions…", flush=True)
    ran = await asyncio.gather(*(run_scenario(karma, s) for s in todo))
    for r in ran:
        error = f"{r.outcome.error.type}: {r.outcome.error.message}" if r.outcome.error else ""
        attempts = f"{r.outcome.attempts} attempt(s)"
        print(
            f"  {r.scenario.title:<11} {r.scenario.action_type:<13} {r.outcome.state:<10} "
            f"{attempts:<13} {error}".rstrip()
        )
    return ran


async def run_scenario(karma: EmbeddedKarma, scenario: Scenario) -> Ran:
    """Request one scenario's action, steer it (cancel, approve) and wait for its end."""
    client = karma.client
    if scenario.via_kafka:
        handle = await _request_through_kafka(karma, scenario)
    else:
        handle = await client.request(
            scenario.action_type,
            scenario.params,
            entity_id=f"demo:{scenario.title}",
            correlation_id="karma-demo",
            validate=scenario.validate,
        )
    if scenario.cancel_once_started:
        async for event in handle.transitions(poll_interval=0.2):
            if event.event_type is EventType.STARTED:
                await handle.cancel()
                break
    if scenario.approve_when_asked:
        async for event in handle.transitions(poll_interval=0.2):
            if event.event_type is EventType.WAITING:
                await handle.approve(by="karma-demo", reason="the demo approves")
                break
    outcome = await handle.result()
    status = await handle.status()
    # Every seq up to the last: a stateful action's status holds only its recent runs'.
    last = status.transitions[-1].seq
    return Ran(
        scenario, handle, outcome, [event_id_for(handle.action_id, n) for n in range(1, last + 1)]
    )


async def _request_through_kafka(karma: EmbeddedKarma, scenario: Scenario) -> ActionHandle:
    """Publish the request as any producer would; the ingress starts the action."""
    key = f"karma-demo:{scenario.title}:{uuid.uuid4().hex[:8]}"
    message = Envelope(
        ts=datetime.now(UTC),
        event_type=EventType.REQUESTED.value,
        idempotency_key=key,
        entity_id=f"demo:{scenario.title}",
        correlation_id="karma-demo",
        source=EventSource(system="karma-demo"),
        attrs={"command": scenario.action_type, "args": scenario.params},
    )
    producer = AIOKafkaProducer(**producer_kwargs(karma.settings.kafka))
    await producer.start()
    try:
        await producer.send_and_wait(
            karma.settings.kafka.topics.requested,
            key=key.encode(),
            value=message.model_dump_json().encode(),
        )
    finally:
        await producer.stop()
    handle = karma.client.handle(action_id_for_key(key))
    deadline = asyncio.get_running_loop().time() + LEDGER_TIMEOUT
    while True:  # until the ingress has started it
        with contextlib.suppress(ActionNotFoundError):
            await handle.status()
            return handle
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"the ingress did not start {handle.action_id}")
        await asyncio.sleep(0.2)


async def _wait_for_ledger(ledger: Any, ran: list[Ran]) -> None:
    """Poll ClickHouse until the bridge has written every transition of every action."""
    ids = [r.handle.action_id for r in ran]
    expected = sum(len(r.event_ids) for r in ran)
    deadline = asyncio.get_running_loop().time() + LEDGER_TIMEOUT
    while True:
        stored = len(await asyncio.to_thread(ledger.transitions, ids))
        if stored >= expected:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(
                f"the ledger holds {stored} of {expected} transitions after {LEDGER_TIMEOUT:.0f}s"
            )
        await asyncio.sleep(0.2)


def _analytics(ledger: Any, report_path: Path) -> None:
    """The stats table read back from the ledger's views, and the HTML report."""
    from rich.console import Console

    from bridge.analytics import Analytics, Filters
    from karma.cli.stats_commands import render
    from karma.report import render_html

    analytics = Analytics(ledger)
    answer = {
        "stats": analytics.stats(Filters(), "type").as_json(),
        "errors": [g.as_json() for g in analytics.errors(Filters())],
    }
    print("\nAnalytics (ClickHouse ended_actions, as `karma stats --by type` prints them):")
    render(answer, Console(width=160))
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(render_html(answer), encoding="utf-8")
    print(f"\nHTML report with charts: {report_path.resolve()}")


def _report(ledger: Any, ran: list[Ran]) -> int:
    ids = [r.handle.action_id for r in ran]
    events = ledger.transitions(ids)
    stored_rows = ledger.count_events(ids)
    print("\nLedger (ClickHouse action_events, as written by the bridge):")
    problems: list[str] = []
    for r in ran:
        mine = [e for e in events if e.action_id == r.handle.action_id]
        print(f"\n{r.scenario.title}: {r.scenario.action_type} {r.handle.action_id}")
        for e in mine:
            print(ledger_line(e.seq, e.ts, e.event_type, e.attrs))
        ledger_ids = [f"{e.action_id}:{e.seq}" for e in mine]
        if ledger_ids != r.event_ids:
            problems.append(f"{r.scenario.title}: ledger {ledger_ids} != workflow {r.event_ids}")
        if r.outcome.state is not r.scenario.expected:
            problems.append(
                f"{r.scenario.title}: {r.outcome.state}, expected {r.scenario.expected}"
            )
    if stored_rows != len(events):
        problems.append(f"{stored_rows} rows stored for {len(events)} distinct transitions")
    print()
    if problems:
        print("Ledger check FAILED:\n  " + "\n  ".join(problems))
        return 1
    print(
        f"Ledger check: {len(ran)} actions, {len(events)} transitions, each exactly once "
        "and in seq order, matching every workflow's own history."
    )
    return 0
