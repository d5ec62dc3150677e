"""Record the histories the replay test guards: `python -m tests.histories.record`.

Run it only when a deliberate, `workflow.patched`-guarded change needs new histories; keep
the old files so that running workflows recorded before the change still replay.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from pathlib import Path

from karma.embedded.stack import with_free_ports
from karma.lifecycle import ActionState, EventType
from karma.pipelines.run import StepState
from karma.pipelines.spec import parse_spec
from karma.settings import Settings
from tests.support import pipelines
from tests.support.waiting import reached
from workers.embedded import EmbeddedKarma

HERE = Path(__file__).parent

SCENARIOS: dict[str, tuple[str, dict[str, object], bool]] = {
    "succeeded": ("log", {"message": "hello"}, True),
    "retried": ("demo.flaky", {"failures": 2}, True),
    "validation_failed": ("delay", {"seconds": -1}, False),
    "cancelled": ("delay", {"seconds": 60}, True),
    "event_driven": ("demo.job", {"steps": 1, "step_seconds": 0.1}, True),
    "compensated": ("demo.provision", {"fail_at": "activate"}, True),
    "skipped": ("demo.provision", {"already_provisioned": True}, True),
    "approved": ("demo.approval", {"change": "c"}, True),
    "stateful": ("demo.drain", {"total": 6, "batch": 1, "pause_seconds": 0}, True),
    # The attempt reports what Kafka acknowledged when it is cancelled (ApplicationError).
    "cancelled_attempt_reports_emitted": ("delay", {"seconds": 60}, True),
    # Kafka frozen: WAITING waits in the outbox (the durable emit activity) when the
    # cancel lands.
    "cancelled_during_durable_emit": ("demo.approval", {"change": "c"}, True),
}
# Recorded again by the composed core (contract 2: typed activities,
# replay-stable times, callbacks): `<name>_core2`.
CORE_2 = (
    "succeeded",
    "retried",
    "cancelled",
    "event_driven",
    "compensated",
    "approved",
    "stateful",
)
SCENARIOS.update({f"{name}_core2": SCENARIOS[name] for name in CORE_2})
# Recorded again once only committed transitions are published (contract 3): `<name>_core3`.
CORE_3 = (
    "succeeded",
    "retried",
    "validation_failed",
    "cancelled",
    "event_driven",
    "compensated",
    "skipped",
    "approved",
    "stateful",
)
SCENARIOS.update({f"{name}_core3": SCENARIOS[name] for name in CORE_3})
# Recorded again once an emit is never cancelled half way (contract 4): `<name>_core4`.
CORE_4 = (*CORE_3, "cancelled_during_durable_emit")
SCENARIOS.update({f"{name}_core4": SCENARIOS[name] for name in CORE_4})
# The broker pauses (less than an emit's timeout) while an iteration's progress is being
# published and its pause runs, and the cancel lands then.
SCENARIOS["cancelled_during_slow_emit_core4"] = (
    "demo.drain",
    {"total": 1000, "batch": 1, "pause_seconds": 0.2},
    True,
)
CANCELLED_ONCE_STARTED = (
    "cancelled",
    "cancelled_attempt_reports_emitted",
    "cancelled_core2",
    "cancelled_core3",
    "cancelled_core4",
)


# Pipelines (PipelineWorkflow): a spec, its params, and whether it is cancelled once two
# steps run.
PIPELINES: dict[str, tuple[str, dict[str, object], bool]] = {
    "pipeline_diamond": (pipelines.DIAMOND, {"version": "1"}, False),
    "pipeline_compensated": (pipelines.COMPENSATED, {}, False),
    "pipeline_cancelled": (pipelines.CANCELLED, {}, True),
}


async def record_pipelines(karma: EmbeddedKarma) -> None:
    for name, (text, params, cancel) in PIPELINES.items():
        if (HERE / f"{name}.json").exists():
            continue
        handle = await karma.client.start_pipeline(parse_spec(text), params)
        while cancel:
            status = await handle.status()
            if sum(s.state is StepState.RUNNING for s in status.steps) >= 2:
                await handle.cancel()
                break
            await asyncio.sleep(0.1)
        await handle.result()
        history = await karma.temporal.get_workflow_handle(handle.workflow_id).fetch_history()
        (HERE / f"{name}.json").write_text(history.to_json())
        print(f"recorded {name}: {len(history.events)} events")  # noqa: T201


async def record() -> None:
    settings = with_free_ports(Settings(), Path(tempfile.mkdtemp(prefix="karma-record-")))
    async with EmbeddedKarma(settings, persistent=False) as karma:
        await record_pipelines(karma)
        for name, (action_type, params, validate) in SCENARIOS.items():
            if (HERE / f"{name}.json").exists() or (HERE / f"{name}_run1.json").exists():
                continue  # keep what was recorded before: running workflows must replay
            broker = karma.servers.kafka.process.pid
            if name.startswith("cancelled_during_durable_emit") and broker is not None:
                os.kill(broker, signal.SIGSTOP)
            handle = await karma.client.request(action_type, params, validate=validate)
            if name.startswith("cancelled_during_durable_emit") and broker is not None:
                async for event in handle.transitions(poll_interval=0.1):
                    if event.event_type is EventType.WAITING:  # its flush hangs now
                        await handle.cancel()
                        break
                await asyncio.sleep(2)
                os.kill(broker, signal.SIGCONT)
            if name == "cancelled_during_slow_emit_core4" and broker is not None:
                await reached(handle, ActionState.STARTED, timeout=60)
                await asyncio.sleep(1)
                os.kill(broker, signal.SIGSTOP)
                await asyncio.sleep(0.5)
                await handle.cancel()
                await asyncio.sleep(1)
                os.kill(broker, signal.SIGCONT)
            if name in CANCELLED_ONCE_STARTED:
                async for event in handle.transitions(poll_interval=0.1):
                    if event.event_type is EventType.STARTED:
                        await handle.cancel()
                        break
            if name.startswith("approved"):
                async for event in handle.transitions(poll_interval=0.1):
                    if event.event_type is EventType.WAITING:
                        await handle.approve(by="recorder", reason="replay test")
                        break
            await handle.result()
            # Every run (a stateful action continues as new), oldest first.
            query = f"WorkflowId = '{handle.workflow_id}'"
            runs = [wf.run_id async for wf in karma.temporal.list_workflows(query)][::-1]
            for index, run_id in enumerate(runs):
                wf = karma.temporal.get_workflow_handle(handle.workflow_id, run_id=run_id)
                history = await wf.fetch_history()
                suffix = f"_run{index + 1}" if len(runs) > 1 else ""
                (HERE / f"{name}{suffix}.json").write_text(history.to_json())
                print(f"recorded {name}{suffix}: {len(history.events)} events")  # noqa: T201


if __name__ == "__main__":
    asyncio.run(record())
