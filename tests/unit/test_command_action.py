"""The `command` action's process handling with real child processes: exit codes, the
timeout that stops the whole process group, truncated output, masked secrets, the small
environment, and a cancellation that stops the child."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from karma.actions import _process
from karma.actions.command import judge, limits_for
from karma.errors import ErrorType, LimitExceededError, PermanentError, TransientError
from karma.meta import ActionMeta, ExecutorLimits
from karma.payload_size import check_output_limit

PY = sys.executable


async def run(code: str, **kwargs: object) -> _process.Finished:
    options: dict[str, object] = {
        "cwd": None, "env": _process.environment({}, inherit=False), "timeout_s": 10.0,
        "max_output_bytes": 65536,
    }  # fmt: skip
    options.update(kwargs)
    return await _process.run([PY, "-c", code], **options)  # type: ignore[arg-type]


async def test_exit_codes_decide_success_retry_or_failure() -> None:
    ok = await run("print('hi')")
    judge(ok, {0}, set())
    assert ok.exit_code == 0 and ok.stdout == "hi\n"
    failed = await run("import sys; print('boom', file=sys.stderr); sys.exit(3)")
    with pytest.raises(PermanentError, match="exit code 3: boom"):
        judge(failed, {0}, set())
    with pytest.raises(TransientError, match="exit code 3"):
        judge(failed, {0}, {3})
    judge(failed, {0, 3}, set())


async def test_a_timeout_stops_the_whole_process_group(tmp_path: Path) -> None:
    marker = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([{PY!r}, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(marker)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()
    finished = await run(code, timeout_s=1.0)
    assert finished.timed_out and time.monotonic() - started < 10
    with pytest.raises(TransientError, match="timeout"):
        judge(finished, {0}, set())
    grandchild = int(marker.read_text())
    for _ in range(50):  # reaped by init once killed
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the grandchild outlived the timeout")


async def test_output_is_truncated_to_its_tail_and_secrets_are_masked() -> None:
    finished = await run(
        "print('x' * 5000); print('token hunter2 end')",
        max_output_bytes=100,
        secrets=["hunter2"],
    )
    assert finished.truncated and len(finished.stdout) <= 100
    assert finished.stdout.endswith("token *** end\n") and "hunter2" not in finished.stdout


async def test_the_child_gets_a_small_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KARMA_SECRETS_KEY", "do-not-leak")
    env = _process.environment({"GIVEN": "1"}, inherit=False)
    finished = await run("import os; print(sorted(os.environ))", env=env)
    assert "KARMA_SECRETS_KEY" not in finished.stdout and "'GIVEN'" in finished.stdout
    assert "PATH" in finished.stdout
    with pytest.raises(PermanentError):
        _process.environment({"A=B": "x"}, inherit=False)


async def test_a_cancelled_attempt_stops_its_child(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    task = asyncio.ensure_future(
        run(f"import os, time; open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(60)")
    )
    for _ in range(200):  # the child writes its pid once it runs
        if marker.exists() and marker.read_text():
            break
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ProcessLookupError):
        os.kill(int(marker.read_text()), 0)


async def test_a_missing_program_or_bad_argv_is_permanent() -> None:
    with pytest.raises(PermanentError, match="cannot run"):
        await _process.run(["/no/such/program"], cwd=None, env={}, timeout_s=5, max_output_bytes=10)
    with pytest.raises(PermanentError, match="argv"):
        await _process.run([], cwd=None, env={}, timeout_s=5, max_output_bytes=10)


async def test_a_background_child_holding_the_output_neither_delays_nor_outlives_it() -> None:
    started = time.monotonic()
    finished = await _process.run(
        ["sh", "-c", "echo hi; sleep 30 & echo $! > /dev/stderr"],
        cwd=None, env=_process.environment({}, inherit=False), timeout_s=10,
        max_output_bytes=1000,
    )  # fmt: skip
    assert finished.exit_code == 0 and not finished.timed_out
    assert time.monotonic() - started < 5 and finished.stdout == "hi\n"
    background = int(finished.stderr.strip())
    for _ in range(50):  # killed with its group once the command exited
        try:
            os.kill(background, 0)
        except ProcessLookupError:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the background child outlived the command")


async def test_a_secret_cut_at_the_edge_of_the_kept_output_is_still_masked() -> None:
    # The tail kept starts inside the secret: its end must not show.
    finished = await run(
        "print('x' * 100 + 'SECRETVALUE' + 'y' * 5)", max_output_bytes=12, secrets=["SECRETVALUE"]
    )
    assert "VALUE" not in finished.stdout and finished.truncated


# Limits: a child that goes past each one, and what stays within them.

HOG_MEMORY = "x = bytearray(400 * 1024 * 1024); print(len(x))"
HOG_CPU = "while True: pass"


async def test_a_child_past_its_memory_limit_ends_as_limit_exceeded() -> None:
    limits = ExecutorLimits(memory_mb=150)
    finished = await run(HOG_MEMORY, limits=limits)
    assert finished.exceeded == "memory_mb=150" and finished.exit_code != 0
    with pytest.raises(LimitExceededError, match="limit memory_mb=150 exceeded") as caught:
        judge(finished, {0}, set())
    assert caught.value.error_type is ErrorType.LIMIT_EXCEEDED
    within = await run(HOG_MEMORY, limits=ExecutorLimits(memory_mb=1024))
    assert within.exit_code == 0 and not within.exceeded
    judge(within, {0}, set())


async def test_a_child_past_its_cpu_limit_is_stopped_and_named() -> None:
    started = time.monotonic()
    finished = await run(HOG_CPU, limits=ExecutorLimits(cpu_seconds=1), timeout_s=30.0)
    assert time.monotonic() - started < 15  # stopped by the limit, not the timeout
    assert not finished.timed_out and finished.exceeded == "cpu_seconds=1"
    with pytest.raises(LimitExceededError, match=r"limit cpu_seconds=1 exceeded.*CPU time"):
        judge(finished, {0}, set())


async def test_limits_reach_what_the_child_starts_and_a_missing_program_stays_clear() -> None:
    code = (
        "import resource\n"
        "print(resource.getrlimit(resource.RLIMIT_AS)[0])\n"
        "print(resource.getrlimit(resource.RLIMIT_CPU)[0])\n"
    )
    finished = await run(code, limits=ExecutorLimits(memory_mb=512, cpu_seconds=7))
    assert finished.stdout.split() == [str(512 * 1024 * 1024), "7"]
    with pytest.raises(PermanentError, match="cannot run 'no-such-program-here'"):
        await _process.run(
            ["no-such-program-here"], cwd=None, env=_process.environment({}, inherit=False),
            timeout_s=5.0, max_output_bytes=100, limits=ExecutorLimits(cpu_seconds=5),
        )  # fmt: skip
    # A failure that is not about memory is not called a memory breach.
    plain = await run("import sys; sys.exit(4)", limits=ExecutorLimits(memory_mb=512))
    assert plain.exit_code == 4 and not plain.exceeded


def test_a_request_can_only_tighten_the_types_limits() -> None:
    declared = ExecutorLimits(memory_mb=256)
    assert limits_for(declared, {"memory_mb": 1024}).memory_mb == 256
    assert limits_for(declared, {"memory_mb": 64, "cpu_seconds": 3}).model_dump() == {
        "max_output_bytes": None, "memory_mb": 64, "cpu_seconds": 3,
    }  # fmt: skip
    assert limits_for(ExecutorLimits(), {}).memory_mb is None


def test_outputs_past_the_types_max_output_bytes_are_refused_by_name() -> None:
    meta = ActionMeta(type="t.big", name="big", limits=ExecutorLimits(max_output_bytes=100))
    check_output_limit(meta, {"small": "x" * 50})
    with pytest.raises(LimitExceededError, match=r"max_output_bytes.*over the 100.*big \("):
        check_output_limit(meta, {"small": "x", "big": "y" * 500})
    check_output_limit(ActionMeta(type="t.free", name="free"), {"big": "y" * 10_000})


async def test_under_limits_a_program_starts_as_it_would_without(tmp_path: Path) -> None:
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\nyes | head -n 1\ngrep SigIgn /proc/self/status\n")
    script.chmod(0o755)
    env = _process.environment({}, inherit=False)
    plain = await _process.run(
        ["./hello.sh"], cwd=str(tmp_path), env=env, timeout_s=10.0, max_output_bytes=4096
    )
    limited = await _process.run(
        ["./hello.sh"], cwd=str(tmp_path), env=env, timeout_s=10.0, max_output_bytes=4096,
        limits=ExecutorLimits(cpu_seconds=5, memory_mb=1024),
    )  # fmt: skip
    # Relative to cwd; SIGPIPE not ignored (no "Broken pipe" from yes), the same signals.
    assert limited.exit_code == plain.exit_code == 0
    assert limited.stdout == plain.stdout and limited.stdout.startswith("y\nSigIgn:")
    assert limited.stderr == plain.stderr == ""
