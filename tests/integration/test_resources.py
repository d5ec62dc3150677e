"""Supplied resources on the embedded stack: a worker of its own whose executor requires
the `jobs` service's client. While the service's health check fails, attempts fail as
transient without reaching it; once it recovers, the client is made again and the action
succeeds; the worker's stop closes it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from karma.client import KarmaClient
from karma.executor import ActionContext, ActionResult, BaseActionExecutor
from karma.lifecycle import ActionState, EventType
from karma.meta import ActionMeta, OutputDefinition, ParamType
from karma.registry import ActionRegistry
from karma.request import ActionRequest
from karma.settings import ResourceSettings
from workers.embedded import EmbeddedKarma
from workers.worker import ActionWorker

QUEUE = "resources-test"
TIMEOUT_S = 60.0

META = ActionMeta(
    type="test.ping_jobs",
    name="Ping the jobs service through its shared client",
    required_services=("jobs",),
    outputs=(OutputDefinition(name="pings", type=ParamType.NUMBER),),
)


class PingJobs(BaseActionExecutor):
    meta = META

    async def execute(self, ctx: ActionContext) -> ActionResult:
        body = await ctx.invoke_service("jobs", "GET", "/ping")
        return ActionResult(outputs={"pings": body["pings"]})


async def until(condition: Callable[[], Any]) -> None:
    for _ in range(int(TIMEOUT_S / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(condition)


async def test_an_unhealthy_resource_fails_attempts_until_it_is_made_again(
    karma: EmbeddedKarma,
) -> None:
    service = karma.reference_service
    assert service is not None
    settings = karma.settings.model_copy(
        update={
            "services": {"jobs": service.url},
            "resources": ResourceSettings(check_interval_s=0.3),
        }
    )
    registry = ActionRegistry()
    registry.add(PingJobs)
    client = KarmaClient(karma.temporal, task_queue=QUEUE, registry=registry)
    worker = ActionWorker(karma.temporal, settings, registry=registry, task_queue=QUEUE)
    service.health_status = 200
    try:
        async with worker:
            jobs = {r["name"]: r for r in worker.resources.snapshot()}["jobs"]
            assert jobs["health"] == "not_created"  # lazily, when an action needs it
            first = await client.request("test.ping_jobs")
            assert (
                await asyncio.wait_for(first.result(), TIMEOUT_S)
            ).state is ActionState.SUCCEEDED

            def health() -> str:
                return str({r["name"]: r for r in worker.resources.snapshot()}["jobs"]["health"])

            assert health() == "healthy"
            service.health_status = 503
            await until(lambda: health() == "unhealthy")
            pings = service.pings
            request = ActionRequest.new("test.ping_jobs").model_copy(update={"max_attempts": 30})
            second = await client.submit(request)
            refused = False
            for _ in range(int(TIMEOUT_S / 0.1)):
                status = await second.status()
                refused = any(
                    t.event_type is EventType.RETRYING
                    and "resource jobs is unhealthy" in str(t.attrs)
                    for t in status.transitions
                )
                if refused:
                    break
                await asyncio.sleep(0.1)
            assert refused, status.transitions
            assert service.pings == pings  # never run against it
            service.health_status = 200
            outcome = await asyncio.wait_for(second.result(), TIMEOUT_S)
            assert outcome.state is ActionState.SUCCEEDED
            snapshot = {r["name"]: r for r in worker.resources.snapshot()}["jobs"]
            assert snapshot["health"] == "healthy" and snapshot["created"] >= 2
        assert {r["name"]: r for r in worker.resources.snapshot()}["jobs"]["health"] == "closed"
    finally:
        service.health_status = 200


async def test_karma_resources_lists_the_workers_resources_and_breakers(
    karma: EmbeddedKarma,
) -> None:
    from tests.support.processes import karma_env, run_karma

    code, out = await run_karma(["resources", "--json"], karma_env(karma.settings))
    assert code == 0, out
    body = json.loads(out.strip().splitlines()[-1])
    names = {r["name"]: r for r in body["resources"]}
    # Its health depends on what ran before (the service may just have been failing).
    health = names["jobs"]["health"]
    assert health in ("not_created", "healthy", "unhealthy"), names
    assert isinstance(body["breakers"], list)
    code, out = await run_karma(["resources"], karma_env(karma.settings))
    assert code == 0 and "jobs" in out and "circuit breaker" in out, out
