"""Child server processes that never outlive Karma, and waiting for them to be ready."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import socket
import subprocess
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel sends SIGTERM when Karma dies, even
    by SIGKILL, so no server is left orphaned."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ChildProcess:
    """One server process, its output in a log file, stopped by PID."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if os.name == "posix" else None,
            )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            with self.log_path.open(errors="replace") as log:
                return "".join(deque(log, maxlen=lines))
        except OSError:
            return ""

    async def wait_ready(
        self, check: Callable[[], Awaitable[bool]], *, timeout: float, what: str
    ) -> None:
        """Poll `check` until it answers True; fail early if the process exits."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if not self.running:
                raise RuntimeError(
                    f"{self.name} exited before it was ready ({what}); "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            if await check():
                return
            if loop.time() > deadline:
                raise TimeoutError(
                    f"{self.name} was not ready after {timeout:.0f}s ({what}); "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            await asyncio.sleep(0.1)
