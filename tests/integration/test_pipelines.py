"""Pipelines on the embedded stack: every step a child ActionWorkflow, every transition of
the pipeline and of its steps' actions on Kafka and in ClickHouse exactly once."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from karma.errors import ActionNotFoundError, ValidationError
from karma.lifecycle import ActionState, EventType
from karma.pipelines.client import PipelineHandle, PlanOutdatedError
from karma.pipelines.run import PipelineStatus, StepState
from karma.pipelines.spec import parse_spec
from karma.status import ActionStatus
from tests.conftest import unique
from tests.support.checks import assert_mirrored
from tests.support.kafka import transitions_on_kafka
from tests.support.pipelines import CANCELLED, COMPENSATED, DIAMOND
from workers.embedded import EmbeddedKarma

RESULT_TIMEOUT = 90


async def children(karma: EmbeddedKarma, status: PipelineStatus) -> list[ActionStatus]:
    return [await karma.client.handle(s.action_id).status() for s in status.steps if s.action_id]


def as_action(status: PipelineStatus) -> ActionStatus:
    return ActionStatus(
        action_id=status.pipeline_id,
        action_type="pipeline",
        state=status.state,
        transitions=status.transitions,
    )


def step_events(status: PipelineStatus, event_type: EventType) -> list[str]:
    return [str(t.attrs["step"]) for t in status.transitions if t.event_type is event_type]


async def ended(handle: PipelineHandle) -> PipelineStatus:
    return await asyncio.wait_for(handle.result(), RESULT_TIMEOUT)


async def test_a_diamond_runs_in_waves_feeds_outputs_skips_and_continues(
    karma: EmbeddedKarma,
) -> None:
    spec = parse_spec(DIAMOND)
    handle = await karma.client.start_pipeline(spec, {"version": "2.0"})
    status = await ended(handle)
    states = {s.id: s.state for s in status.steps}
    assert status.state is ActionState.SUCCEEDED, status
    assert states == {
        "start": StepState.SUCCEEDED,
        "provision": StepState.SUCCEEDED,
        "warm-up": StepState.SUCCEEDED,
        "done": StepState.SUCCEEDED,
        "notify": StepState.SKIPPED,
        "after-notify": StepState.SKIPPED,
        "canary": StepState.FAILED,
        "after-canary": StepState.SKIPPED,
    }
    assert status.step("notify").reason == "condition false: params.notify"
    assert status.step("after-notify").reason == "every step it needs is skipped"
    assert "canary" in status.step("after-canary").reason
    # The output of provision fed done's message.
    assert status.step("done").outputs == {"logged": "at https://svc-2.0.example.internal"}
    # provision and warm-up ran side by side: both started before either ended.
    events = [(t.event_type, t.attrs.get("step")) for t in status.transitions]
    started = [events.index((EventType.PIPELINE_STEP_STARTED, s)) for s in ("provision", "warm-up")]
    ended_at = [events.index((EventType.PIPELINE_STEP_ENDED, s)) for s in ("provision", "warm-up")]
    assert max(started) < min(ended_at), events
    # The steps' actions carry the pipeline as their correlation id.
    actions = await children(karma, status)
    assert len(actions) == 5
    assert {a.transitions[0].correlation_id for a in actions} == {status.pipeline_id}
    assert status.transitions[0].event_type is EventType.PIPELINE_REQUESTED
    assert status.transitions[-1].event_type is EventType.PIPELINE_SUCCEEDED
    ended_steps = step_events(status, EventType.PIPELINE_STEP_ENDED)
    assert sorted(ended_steps) == sorted(states)  # each step ended once
    await assert_mirrored(karma, [as_action(status), *actions])


async def test_a_failure_compensates_the_transactional_steps_in_reverse(
    karma: EmbeddedKarma,
) -> None:
    handle = await karma.client.start_pipeline(parse_spec(COMPENSATED))
    status = await ended(handle)
    assert status.state is ActionState.FAILED
    assert status.error is not None and "step breaks failed" in status.error.message
    assert step_events(status, EventType.PIPELINE_STEP_COMPENSATED) == ["second", "first"]
    assert all(
        t.attrs["outcome"] == "compensated"
        for t in status.transitions
        if t.event_type is EventType.PIPELINE_STEP_COMPENSATED
    )
    states = {s.id: s.state for s in status.steps}
    assert states == {
        "first": StepState.COMPENSATED,
        "second": StepState.COMPENSATED,
        "side": StepState.SUCCEEDED,  # not transactional: nothing to undo
        "breaks": StepState.FAILED,
        "never": StepState.NOT_RUN,  # the pipeline stopped at breaks
    }
    kinds = [t.event_type for t in status.transitions]
    assert kinds.index(EventType.PIPELINE_COMPENSATING) < kinds.index(EventType.PIPELINE_FAILED)
    await assert_mirrored(karma, [as_action(status), *await children(karma, status)])


async def test_cancelling_mid_wave_cancels_the_running_steps(karma: EmbeddedKarma) -> None:
    handle = await karma.client.start_pipeline(parse_spec(CANCELLED))
    deadline = asyncio.get_running_loop().time() + RESULT_TIMEOUT
    while True:  # both slow steps running (the third waits for a slot)
        status = await handle.status()
        running = {s.id for s in status.steps if s.state is StepState.RUNNING}
        if {"slow-a", "slow-b"} <= running:
            break
        assert asyncio.get_running_loop().time() < deadline, status
        await asyncio.sleep(0.1)
    await handle.cancel()
    status = await ended(handle)
    states = {s.id: s.state for s in status.steps}
    assert status.state is ActionState.CANCELLED, status
    assert states["quick"] is StepState.SUCCEEDED
    assert states["slow-a"] is StepState.CANCELLED and states["slow-b"] is StepState.CANCELLED
    assert states["later"] is StepState.NOT_RUN
    actions = {a.action_id: a for a in await children(karma, status)}
    slow_b = actions[status.step("slow-b").action_id]
    assert slow_b.state is ActionState.CANCELLED
    # The transactional step undid its own completed steps before the pipeline ended.
    assert EventType.COMPENSATED in [t.event_type for t in slow_b.transitions] or not [
        t for t in slow_b.transitions if t.event_type is EventType.PROGRESS
    ]
    await assert_mirrored(karma, [as_action(status), *actions.values()])


async def test_a_saved_plan_is_refused_once_the_spec_changed(karma: EmbeddedKarma) -> None:
    from karma.pipelines.plan import plan

    spec = parse_spec(DIAMOND)
    saved: dict[str, Any] = plan(spec, karma.client.registry, {"version": "1"}).as_json()
    changed = parse_spec(DIAMOND.replace("max_parallel: 3", "max_parallel: 2"))
    with pytest.raises(PlanOutdatedError, match="the spec changed"):
        await karma.client.start_pipeline(changed, {"version": "1"}, saved_plan=saved)
    with pytest.raises(PlanOutdatedError, match="the params changed"):
        await karma.client.start_pipeline(spec, {"version": "2"}, saved_plan=saved)
    with pytest.raises(ValidationError, match=r"params\.version"):
        await karma.client.start_pipeline(spec, {})
    key = unique("pl")
    first = await karma.client.start_pipeline(
        spec, {"version": "1"}, saved_plan=saved, idempotency_key=key
    )
    again = await karma.client.start_pipeline(spec, {"version": "1"}, idempotency_key=key)
    assert first.created and not again.created and again.pipeline_id == first.pipeline_id
    assert (await ended(first)).state is ActionState.SUCCEEDED
    unknown = karma.client.pipeline("pl_" + "0" * 32)
    for call in (unknown.status, unknown.result, unknown.cancel):
        with pytest.raises(ActionNotFoundError):
            await call()


async def test_the_api_plans_runs_follows_and_cancels_pipelines(karma: EmbeddedKarma) -> None:
    import httpx
    import yaml

    from karma.api.keys import Scope
    from tests.support.api import admin_key, bearer, new_key

    assert karma.api is not None, "the embedded stack serves the API"
    spec = yaml.safe_load(CANCELLED)
    async with httpx.AsyncClient(
        base_url=karma.api.url, timeout=30, headers=bearer(admin_key(karma))
    ) as api:
        planned = (await api.post("/v1/pipelines/plan", json={"spec": spec})).json()
        assert planned["waves"] == [["quick"], ["slow-a", "slow-b", "waits"], ["later"]]
        stale = await api.post("/v1/pipelines", json={"spec": spec, "plan_hash": "0" * 64})
        assert stale.status_code == 409 and stale.json()["errors"][0]["field"] == "plan_hash"
        bad = await api.post("/v1/pipelines", json={"spec": {**spec, "steps": []}})
        assert bad.status_code == 422
        cyclic = {**spec, "steps": [{**spec["steps"][0], "needs": ["quick"]}]}
        refused = await api.post("/v1/pipelines", json={"spec": cyclic})
        assert refused.status_code == 422 and "steps.quick.needs" in refused.text
        body = {"spec": spec, "plan_hash": planned["plan_hash"], "tenant": "acme"}
        created = await api.post("/v1/pipelines", json=body, headers={"Idempotency-Key": unique()})
        assert created.status_code == 202, created.text
        pipeline_id = created.json()["pipeline_id"]
        assert created.headers["Location"] == f"/v1/pipelines/{pipeline_id}"
        other = new_key(karma, Scope.READ, tenant="other")
        hidden = await api.get(f"/v1/pipelines/{pipeline_id}", headers=bearer(other))
        assert hidden.status_code == 404
        deadline = asyncio.get_running_loop().time() + RESULT_TIMEOUT
        while True:
            status = (await api.get(f"/v1/pipelines/{pipeline_id}")).json()
            if any(s["state"] == "running" and s["id"] == "slow-a" for s in status["steps"]):
                break
            assert asyncio.get_running_loop().time() < deadline, status
            await asyncio.sleep(0.2)
        assert (await api.post(f"/v1/pipelines/{pipeline_id}/cancel")).status_code == 202
        await ended(karma.client.pipeline(pipeline_id))
        status = (await api.get(f"/v1/pipelines/{pipeline_id}")).json()
        assert status["state"] == "CANCELLED"
        assert (await api.post(f"/v1/pipelines/{pipeline_id}/cancel")).status_code == 409
        assert (await api.get("/v1/pipelines/pl_" + "0" * 32)).status_code == 404
        assert (await api.get("/v1/pipelines/nope")).status_code == 422


INFRA = """
name: infra
on_failure: compensate
steps:
  - id: network
    action: terraform
    params:
      dir: DIR
      vars: {password: s3cret-value-1}
      env: {FAKE_TERRAFORM_LOG: "@LOG@"}
      restore_targets: [aws_vpc.main]
  - id: smoke
    action: command
    needs: [network]
    params:
      argv: [PYTHON, -c, "import os, sys; print('token', os.environ['TOKEN']); sys.exit(7)"]
      env: {TOKEN: tok-value-22}
"""


async def test_terraform_and_command_steps_keep_secrets_and_roll_back(
    karma: EmbeddedKarma, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import sys

    # A FAKE terraform (tests/support/bin): neither terraform nor tofu installs here.
    fake = Path(__file__).parents[1] / "support" / "bin"
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    log = tmp_path / "terraform.log"
    text = INFRA.replace("DIR", str(tmp_path)).replace("PYTHON", sys.executable)
    text = text.replace("@LOG@", str(log))
    handle = await karma.client.start_pipeline(parse_spec(text))
    status = await ended(handle)
    assert status.state is ActionState.FAILED
    assert {s.id: s.state for s in status.steps} == {
        "network": StepState.COMPENSATED,
        "smoke": StepState.FAILED,
    }, status.steps
    smoke = status.step("smoke")
    assert smoke.error is not None and "exit code 7" in smoke.error.message
    assert "token ***" in smoke.error.message and "tok-value-22" not in smoke.error.message
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    calls = [line["args"] for line in lines]
    commands = [next(a for a in c if not a.startswith("-")) for c in calls]
    assert commands == ["init", "plan", "apply", "destroy"]
    assert "-target=aws_vpc.main" in calls[-1]
    # The variables reach it in its environment, never on its command line (`ps`).
    assert lines[1]["variables"] == {"TF_VAR_password": "s3cret-value-1"}
    assert not any("s3cret" in a for c in calls for a in c)
    network = await karma.client.handle(status.step("network").action_id).status()
    outputs = network.outputs
    assert outputs["to_add"] == 2 and outputs["to_change"] == 1 and outputs["applied"] is True
    assert "password ***" in outputs["plan"]
    actions = await children(karma, status)
    await assert_mirrored(karma, [as_action(status), *actions])
    # The secrets reached the processes, and nothing else: not Temporal's histories, not
    # Kafka, not the ledger.
    histories = [
        (await karma.temporal.get_workflow_handle(w).fetch_history()).to_json()
        for w in [handle.workflow_id, *(f"action-{a.action_id}" for a in actions)]
    ]
    rows = await asyncio.to_thread(karma.ledger.transitions, [a.action_id for a in actions])
    on_kafka = await transitions_on_kafka(
        karma.settings.kafka, [status.pipeline_id, *(a.action_id for a in actions)]
    )
    published = json.dumps([[m.json() for m in ms] for ms in on_kafka.values()])
    for secret in ("s3cret-value-1", "tok-value-22"):
        assert all(secret not in h for h in histories), secret
        assert all(secret not in json.dumps(r.attrs) for r in rows), secret
        assert secret not in published, secret


async def test_a_pipeline_cancelled_as_it_starts_runs_nothing_to_its_end(
    karma: EmbeddedKarma,
) -> None:
    spec = parse_spec(
        """
name: at-once
steps:
  - {id: long, action: delay, params: {seconds: 120}}
  - {id: after, action: log, needs: [long], params: {message: never}}
"""
    )
    handle = await karma.client.start_pipeline(spec)
    await handle.cancel()  # most often lands in its first workflow task
    status = await asyncio.wait_for(handle.result(), 60)  # not after the 120 s delay
    assert status.state is ActionState.CANCELLED
    assert status.step("long").state in (StepState.CANCELLED, StepState.NOT_RUN)
    assert status.step("after").state is StepState.NOT_RUN
    await assert_mirrored(karma, [as_action(status), *await children(karma, status)])
