"""Running `karma` commands as separate processes against the session's stack."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bridge.consumer_loop import group_caught_up
from karma.client import ActionHandle
from karma.settings import Settings
from karma.status import ActionOutcome, ActionStatus


def karma_env(settings: Settings, **overrides: str | Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KARMA_")}
    env.update(
        KARMA_TEMPORAL__ADDRESS=settings.temporal.address,
        KARMA_TEMPORAL__NAMESPACE=settings.temporal.namespace,
        KARMA_TEMPORAL__TASK_QUEUE=settings.temporal.task_queue,
        KARMA_TEMPORAL__UI_PORT=str(settings.temporal.ui_port),
        KARMA_KAFKA__BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers,
        KARMA_API__PORT=str(settings.api.port),
        KARMA_DATA_DIR=str(settings.data_dir),
        KARMA_LOG_LEVEL="INFO",
    )
    env.update({k: str(v) for k, v in overrides.items()})
    return env


class KarmaProcess:
    """`python -m karma ARGS` with its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "karma", *args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_for_output(self, text: str, timeout: float = 60) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while text not in self.output():
            if self.proc.poll() is not None:
                raise AssertionError(f"process exited ({self.proc.returncode}):\n{self.output()}")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{text!r} not printed in {timeout}s:\n{self.output()}")
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def ensure_stopped(self) -> None:
        """After a failed test: SIGKILL if it still runs (its servers die with it)."""
        if self.proc.poll() is None:
            self.kill()

    def terminate(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._log.close()
        return code


async def run_karma(
    args: list[str], env: dict[str, str], timeout: float = 60, stdin: bytes | None = None
) -> tuple[int, str]:
    """Run a short `karma` command; return its exit code and combined output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "karma",
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(stdin), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def wait_until_group_caught_up(settings: Settings, group: str, timeout: float = 60) -> None:
    """Wait until `group` has committed every transition currently on the broker."""
    topics = settings.kafka.topics
    transitions = [topics.requested, topics.progress, topics.result]
    caught_up = await group_caught_up(settings.kafka, group, transitions, timeout)
    assert caught_up, f"group {group} not caught up after {timeout}s"


async def finish_on_a_new_worker(
    handle: ActionHandle, env: dict[str, str], log_path: Path, timeout: float
) -> tuple[ActionOutcome, ActionStatus]:
    """Start a replacement `karma worker`, wait for the action to end there, stop the worker."""
    worker = KarmaProcess(["worker"], env, log_path)
    try:
        outcome = await asyncio.wait_for(handle.result(), timeout)
        status = await handle.status()
    finally:
        assert worker.terminate() == 0, worker.output()
    return outcome, status


# The `spawn` fixture: start `karma ARGS` with ENV, output in NAME.log.
Spawn = Callable[[list[str], dict[str, str], str], KarmaProcess]
