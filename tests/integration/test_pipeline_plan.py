"""`karma pipeline validate` and `plan` as a user runs them on the shipped example, with
durations read from the ledger through the API of the process that holds it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from karma.lifecycle import ActionState
from tests.support.checks import assert_in_ledger_once
from tests.support.processes import karma_env, run_karma
from workers.embedded import EmbeddedKarma

EXAMPLE = str(Path(__file__).parents[2] / "examples" / "pipelines" / "release.yaml")


async def test_plan_of_the_shipped_example_with_durations_from_the_ledger(
    karma: EmbeddedKarma, tmp_path: Path
) -> None:
    handle = await karma.client.request("log", {"message": "history for the plan"})
    assert (await asyncio.wait_for(handle.result(), 60)).state is ActionState.SUCCEEDED
    await assert_in_ledger_once(karma, [await handle.status()])  # waits for the ledger
    env = karma_env(karma.settings)
    code, out = await run_karma(["pipeline", "validate", EXAMPLE], env)
    assert code == 0 and "pipeline 'release' valid, 5 step(s)" in out, out
    saved = tmp_path / "plan.json"
    args = ["pipeline", "plan", EXAMPLE, "-p", "version=1.4.2", "-p", "canary=false"]
    code, out = await run_karma([*args, "-o", str(saved), "--json"], env)
    assert code == 0, out
    planned = json.loads(out)
    assert planned["waves"][1] == ["provision", "warm-up"]
    assert planned["steps"]["canary"]["runs"] is False
    assert planned["steps"]["announce-start"]["p50_ms"] is not None  # `log` has history
    assert json.loads(saved.read_text())["plan_hash"] == planned["plan_hash"]
    code, out = await run_karma(args, env)
    assert code == 0, out
    assert "SKIPPED (condition false: params.canary)" in out and "known after step" in out
    code, out = await run_karma(["pipeline", "plan", EXAMPLE, "-p", "canary=maybe"], env)
    assert code == 2 and "params.version" in out and "params.canary" in out, out
