"""The component graph on the embedded stack, through the CLI as a user runs it (the
ledger held by the stack, so the commands go through its API): build, plan, deploy the
root of the shipped graph's database branch, check the reloads and their order in the
ledger, and a second plan that shows no change."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

from karma.lifecycle import ActionState, EventType
from karma.pipelines.run import StepState
from karma.status import ActionStatus
from tests.support.checks import assert_mirrored
from tests.support.processes import karma_env, run_karma
from workers.embedded import EmbeddedKarma

EXAMPLE = Path(__file__).parents[2] / "examples" / "graph"


async def test_deploy_reloads_exactly_what_depends_on_it_then_plans_no_change(
    karma: EmbeddedKarma, tmp_path: Path
) -> None:
    config = tmp_path / "graph"
    shutil.copytree(EXAMPLE, config)
    env = karma_env(karma.settings, KARMA_GRAPH__DIR=config)
    code, out = await run_karma(["graph", "build", "--env", "dev"], env)
    assert code == 0 and "7 component(s)" in out and "stored in the ledger" in out, out
    code, out = await run_karma(["plan", "network", "dev", "--json"], env)
    assert code == 0, out
    # The root: what depends on it reloads in dependency order (docs depends on nothing).
    assert json.loads(out)["reloads"] == ["cache", "database", "api", "web", "worker"]
    code, out = await run_karma(["plan", "database", "dev"], env)
    assert code == 0 and "never deployed to dev" in out, out
    assert "then reloads, in order: api -> web -> worker" in out, out
    assert "runtime password = *** (added)" in out and "dev-only-password" not in out, out
    code, out = await run_karma(["deploy", "database", "dev", "--wait"], env, timeout=180)
    assert code == 0, out
    assert "dev-only-password" not in out
    pipeline_id = out.split("deploy pipeline ")[1].split()[0]
    status = await karma.client.pipeline(pipeline_id).result()
    assert status.state is ActionState.SUCCEEDED
    assert {s.id: s.state for s in status.steps} == {
        "deploy-database": StepState.SUCCEEDED,
        "reload-api": StepState.SUCCEEDED,
        "reload-web": StepState.SUCCEEDED,
        "reload-worker": StepState.SUCCEEDED,
    }
    # In order: api after the database, web and worker after api; nothing else reloaded.
    seq = {
        (t.event_type, t.attrs.get("step")): t.seq
        for t in status.transitions
        if t.event_type in (EventType.PIPELINE_STEP_STARTED, EventType.PIPELINE_STEP_ENDED)
    }
    started, ended = EventType.PIPELINE_STEP_STARTED, EventType.PIPELINE_STEP_ENDED
    assert seq[(ended, "deploy-database")] < seq[(started, "reload-api")]
    for later in ("reload-web", "reload-worker"):
        assert seq[(ended, "reload-api")] < seq[(started, later)]
    assert status.transitions[0].tags["graph_root"] == "database"
    children = [await karma.client.handle(s.action_id).status() for s in status.steps]
    pipeline = ActionStatus(
        action_id=pipeline_id, action_type="pipeline", state=status.state,
        transitions=status.transitions,
    )  # fmt: skip
    await assert_mirrored(karma, [pipeline, *children])  # every transition once
    code, out = await run_karma(["plan", "database", "dev"], env)
    assert code == 0 and "no change" in out and f"last deployed by {pipeline_id}" in out, out
    code, out = await run_karma(["deploy", "database", "dev"], env)
    assert code == 0 and "nothing to deploy" in out, out
    code, out = await run_karma(["graph", "history", "database", "dev", "--json"], env)
    assert code == 0, out
    rows = json.loads(out.strip().splitlines()[-1])
    assert rows[0]["pipeline_id"] == pipeline_id and rows[0]["state"] == "SUCCEEDED"
    assert rows[0]["reloaded"] == ["api", "web", "worker"]
    # A change to its config: the plan names the key, and the deploy runs again.
    path = config / "components" / "database.yaml"
    path.write_text(path.read_text().replace("size: small", "size: large"))
    code, out = await run_karma(["plan", "database", "dev"], env)
    assert code == 0 and 'size: "small" -> "large"' in out, out
    await asyncio.sleep(0)  # the plan read the ledger through the API
