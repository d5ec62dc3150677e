"""`karma dev` and `karma demo` as a user runs them."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import httpx
import pytest

from karma.embedded.stack import with_free_ports
from karma.settings import Settings
from tests.support.processes import KarmaProcess, karma_env, run_karma

pytestmark = pytest.mark.usefixtures("embedded_binaries")


def children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def demo_dirs(tmp: Path) -> list[Path]:
    return list(tmp.glob("karma-demo-*"))


async def gone(pids: set[int], timeout: float = 20) -> bool:
    for _ in range(int(timeout * 10)):
        if not any(alive(p) for p in pids):
            return True
        await asyncio.sleep(0.1)
    return False


async def start_dev(tmp_path: Path) -> tuple[KarmaProcess, dict[str, str], set[int]]:
    settings = with_free_ports(Settings(), tmp_path)
    env = karma_env(settings)
    dev = KarmaProcess(["dev"], env, tmp_path / "dev.log")
    await dev.wait_for_output("Press Ctrl-C to stop", timeout=120)
    servers = children(dev.proc.pid)
    assert len(servers) == 2, dev.output()  # the Temporal dev server and the broker
    return dev, env, servers


async def test_dev_runs_the_stack_and_stops_cleanly(tmp_path: Path) -> None:
    dev, env, servers = await start_dev(tmp_path)
    output = dev.output()
    for line in (
        "starting the Temporal dev server",
        "Web UI      http://127.0.0.1:",
        "Kafka",
        "Service     jobs at http://127.0.0.1:",
        f"API         http://127.0.0.1:{env['KARMA_API__PORT']}",
        f"Console     http://127.0.0.1:{env['KARMA_API__PORT']}/console/",
    ):
        assert line in output
    # A local admin key, printed once and kept (0600) for the local CLI.
    printed = re.search(r"Admin key   (karma_\S+)", output)
    assert printed, output
    kept = tmp_path / "admin.key"
    assert kept.read_text().strip() == printed.group(1)
    assert kept.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "temporal.db").exists()  # SQLite in the data dir
    code, out = await run_karma(["request", "log", "-p", "message=hi", "--wait"], env)
    assert code == 0, out
    assert "SUCCEEDED after 1 attempt(s)" in out
    logged = re.search(r"act_[0-9a-f]{32}", out)
    assert logged, out
    # An event-driven job completes through the reference service's Kafka callbacks.
    code, out = await run_karma(["request", "demo.job", "-p", "steps=1", "--wait"], env)
    assert code == 0, out
    assert "action.progress" in out
    assert "SUCCEEDED after 1 attempt(s)" in out
    # The API of `karma dev` answers, the ledger included (this process owns it).
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{env['KARMA_API__PORT']}") as api:
        assert (await api.get("/v1/action-types")).status_code == 401
        answer = await api.get(
            "/v1/action-types", headers={"Authorization": f"Bearer {printed.group(1)}"}
        )
        assert answer.status_code == 200, answer.text
        ready = await api.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert set(ready.json()["checks"]) == {"temporal", "kafka", "clickhouse"}
    # `karma ledger` reads the ledger `karma dev` holds through that API.
    async with asyncio.timeout(30):
        while True:
            code, out = await run_karma(["ledger", logged.group()], env)
            if code == 0 and "action.succeeded" in out:
                break
            assert code == 0, out
            await asyncio.sleep(0.2)
    assert dev.terminate() == 0, dev.output()
    assert await gone(servers), "servers outlived `karma dev`"


async def test_dev_killed_takes_its_servers_with_it(tmp_path: Path) -> None:
    dev, _, servers = await start_dev(tmp_path)
    dev.kill()
    assert await gone(servers), "servers orphaned after SIGKILL of `karma dev`"


async def test_demo_prints_the_ledger_exactly_once(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KARMA_")}
    env["TMPDIR"] = str(tmp_path)
    env["KARMA_DATA_DIR"] = str(tmp_path / "data")  # where the report goes
    code, out = await run_karma(["demo"], env, timeout=300)
    assert code == 0, out
    scenarios = ("success", "flaky", "permanent", "validation", "cancelled", "job", "timeout")
    for scenario in (*scenarios, "saga", "approval", "reference", "dangling", "stateful"):
        assert f"\n{scenario}: " in out
    assert out.count("action.retrying") == 2
    assert "Ledger check: 12 actions, 63 transitions, each exactly once" in out
    # References resolved by the inventory before acceptance, or refused by name.
    assert "dangling reference: no cluster 'prod-mars'" in out
    assert "action.step_compensated step configure compensated" in out
    assert "action.compensated" in out
    assert "approve by karma-demo" in out
    # It ends with the analytics read back from the ledger's views, and the report.
    analytics = out.split("Analytics (ClickHouse ended_actions", 1)[1]
    assert "Outcomes of ended actions" in analytics and "requested → ended" in analytics
    assert re.search(r"http_request\W+2\W+1\W+1\W", analytics), analytics
    assert "answered <n>, expected <n>" in analytics  # the permanent failure, fingerprinted
    report = tmp_path / "data" / "demo-report.html"
    assert f"HTML report with charts: {report}" in out
    assert report.read_text().count('class="plotly-graph-div"') == 5
    # Then the closed loop: drift -> deviation -> rule -> approval -> action, once.
    loop = out.split("Closed loop:", 1)[1]
    assert re.search(r"bits  supplier-\d{4} reserve latency_shift", loop), loop
    assert "rule decisions: awaiting_approval" in loop
    assert "approved by karma-demo: SUCCEEDED (notify supplier-" in loop
    assert "second scan of the same windows: rule decisions deduplicated (nothing new)" in loop
    assert "linked by correlation id dev_" in loop
    assert not demo_dirs(tmp_path), "the demo left its data dir behind"
