"""Running a child process for an action: its own process group (stopped whole on a
timeout or a cancellation: SIGTERM, then SIGKILL), a small environment (not the worker's,
which holds Karma's keys), output captured and truncated, and secret values masked in it
before anything publishes it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from karma.errors import LimitExceededError, PermanentError
from karma.meta import ExecutorLimits

# What a child gets from the worker's environment unless told to inherit it all.
PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER")
KILL_GRACE_S = 5.0
READ_GRACE_S = 1.0  # after its exit, for the last of its output
POLL_S = 0.05
MASK = "***"
_LIMITED = os.path.join(os.path.dirname(__file__), "_limited.py")
# How a program says it could not allocate (Python, libc's strerror, C++, Go, Java, Rust).
_OUT_OF_MEMORY = re.compile(
    r"MemoryError|Cannot allocate memory|out of memory|bad_alloc|memory allocation of"
    r"|OutOfMemoryError|failed to allocate",
    re.IGNORECASE,
)


@dataclass
class Finished:
    exit_code: int
    stdout: str
    stderr: str
    duration_ms: int
    truncated: bool
    timed_out: bool = False
    exceeded: str = ""  # the limit it went past (`memory_mb=256`), if any


def environment(given: Mapping[str, object] | None, *, inherit: bool) -> dict[str, str]:
    base = (
        dict(os.environ)
        if inherit
        else {k: os.environ[k] for k in PASSED_THROUGH if k in os.environ}
    )
    for key, value in (given or {}).items():
        if not isinstance(key, str) or not key or "=" in key or "\x00" in key:
            raise PermanentError(f"env: {key!r} is not a variable name")
        base[key] = str(value)
    return base


def masked(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted({s for s in secrets if len(s) >= 3}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


class _Tail:
    """The last `limit` bytes of a stream, and whether more came."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > self.limit:
            del self.data[: len(self.data) - self.limit]
            self.truncated = True

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


async def _drain(stream: asyncio.StreamReader | None, tail: _Tail) -> None:
    if stream is None:
        return
    while chunk := await stream.read(65536):
        tail.add(chunk)


def _stop(process: asyncio.subprocess.Process, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


async def run(
    argv: Sequence[str],
    *,
    cwd: str | None,
    env: dict[str, str],
    timeout_s: float,
    max_output_bytes: int,
    secrets: Iterable[str] = (),
    limits: ExecutorLimits | None = None,
) -> Finished:
    """Run `argv` to its end, or stop its whole process group after `timeout_s` or when
    the caller is cancelled (then re-raised). `limits.memory_mb` and `limits.cpu_seconds`
    are set as rlimits (RLIMIT_AS, RLIMIT_CPU) on the program; `Finished.exceeded` names
    the one it went past.

    Raises:
        karma.errors.PermanentError: argv is not a non-empty list of strings, or the
            program or working directory does not exist.
    """
    if not argv or not all(isinstance(a, str) for a in argv):
        raise PermanentError("argv: a non-empty list of strings")
    limited = limits is not None and (limits.memory_mb or limits.cpu_seconds)
    if limited:
        _check_runnable(argv[0], env, cwd)
    started = time.monotonic()
    try:
        process = await asyncio.create_subprocess_exec(
            *(_under_limits(argv, limits) if limits and limited else argv),
            cwd=cwd or None,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group: stopped whole
        )
    except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        raise PermanentError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from exc
    secret = [str(x) for x in secrets]
    # Kept a little longer than asked, so that a secret cut at the edge is still masked.
    margin = max((len(x.encode()) for x in secret), default=0)
    # stderr keeps at least 4 KiB: how a program ended (out of memory?) is read there.
    out, err = _Tail(max_output_bytes + margin), _Tail(max(max_output_bytes, 4096) + margin)
    readers = asyncio.gather(_drain(process.stdout, out), _drain(process.stderr, err))
    timed_out = False
    try:
        # Its exit, not its pipes' end: a background child may hold them open.
        timed_out = not await _exited(process, timeout_s)
        if timed_out:
            await _terminate(process)
    except asyncio.CancelledError:
        await _terminate(process)
        raise
    finally:
        _stop(process, signal.SIGKILL)  # what it left running in its group
        try:
            await asyncio.wait_for(asyncio.shield(readers), READ_GRACE_S)
        except (TimeoutError, asyncio.CancelledError):
            readers.cancel()
    finished = Finished(
        exit_code=process.returncode if process.returncode is not None else -1,
        stdout=_last(masked(out.text(), secret), max_output_bytes),
        stderr=_last(masked(err.text(), secret), max_output_bytes),
        duration_ms=int((time.monotonic() - started) * 1000),
        truncated=out.truncated
        or err.truncated
        or len(out.data) > max_output_bytes
        or len(err.data) > max_output_bytes,
        timed_out=timed_out,
    )
    if limits is not None and not timed_out:
        finished.exceeded = _exceeded(finished, limits, err.text())
    return finished


def _under_limits(argv: Sequence[str], limits: ExecutorLimits) -> list[str]:
    memory = str(limits.memory_mb * 1024 * 1024) if limits.memory_mb else "-"
    cpu = str(limits.cpu_seconds) if limits.cpu_seconds else "-"
    # -I -S: nothing from the environment or site-packages; the wrapper needs neither.
    return [sys.executable, "-I", "-S", _LIMITED, memory, cpu, "--", *argv]


def _check_runnable(program: str, env: Mapping[str, str], cwd: str | None) -> None:
    """The error a direct start would give, before the wrapper hides it behind exit 127.
    A path with a slash is relative to `cwd`, as exec would take it."""
    if os.sep in program:
        path = os.path.join(cwd or "", program)
        found = path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    else:
        found = shutil.which(program, path=env.get("PATH") or os.defpath)  # as exec does
    if found is None:
        raise PermanentError(f"cannot run {program!r}: not found or not executable")


def _exceeded(finished: Finished, limits: ExecutorLimits, stderr: str) -> str:
    """Which limit the program went past, judged by how it ended: SIGXCPU (or SIGKILL
    after using its CPU time) for CPU, a failure saying it could not allocate for memory."""
    code = finished.exit_code
    if limits.cpu_seconds and (
        code in (-signal.SIGXCPU, 128 + signal.SIGXCPU)  # the signal, or a shell's report
        or (code == -signal.SIGKILL and finished.duration_ms >= limits.cpu_seconds * 1000)
    ):
        return f"cpu_seconds={limits.cpu_seconds}"
    if limits.memory_mb and code != 0 and _OUT_OF_MEMORY.search(stderr[-4096:]):
        return f"memory_mb={limits.memory_mb}"
    return ""


def limit_error(finished: Finished) -> LimitExceededError:
    what = "CPU time" if finished.exceeded.startswith("cpu") else "memory"
    return LimitExceededError(
        f"limit {finished.exceeded} exceeded: the program ran out of {what} "
        f"(exit {finished.exit_code}, after {finished.duration_ms} ms)"
    )


def _last(text: str, limit: int) -> str:
    data = text.encode()
    return data[-limit:].decode("utf-8", errors="replace") if len(data) > limit else text


async def _exited(process: asyncio.subprocess.Process, timeout_s: float) -> bool:
    """Whether the process exited within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while process.returncode is None:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL_S)
    return True


async def _terminate(process: asyncio.subprocess.Process) -> None:
    _stop(process, signal.SIGTERM)
    if not await _exited(process, KILL_GRACE_S):
        _stop(process, signal.SIGKILL)
        await _exited(process, KILL_GRACE_S)
