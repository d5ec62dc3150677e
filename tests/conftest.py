"""One embedded stack per test session: Temporal dev server, tansu, chdb, worker, bridge.

Only a missing binary skips the integration tests; CI installs every binary, and a service
that misbehaves fails the tests.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from karma.embedded.binaries import tansu_binary, temporal_binary
from karma.embedded.stack import with_free_ports
from karma.registry import default_registry
from karma.settings import ApiSettings, BridgeSettings, IngressSettings, Settings
from tests.support.actions import TEST_EXECUTORS
from tests.support.processes import KarmaProcess, Spawn
from workers.embedded import EmbeddedKarma


def _binaries_missing() -> str | None:
    try:
        temporal_binary()
        tansu_binary()
    except FileNotFoundError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="session")
def embedded_binaries() -> None:
    """Skip a test that starts its own servers when their binaries are missing (CI
    installs them, so there it never skips)."""
    missing = _binaries_missing()
    if missing:
        pytest.skip(missing)


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    base = Settings(
        bridge=BridgeSettings(batch_max_seconds=0.2),
        # Long enough for the visibility delay, short enough for the orphan tests.
        ingress=IngressSettings(resolve_timeout_s=6.0),
        # Event streams re-read a quiet action's status this often (tests of streams that
        # lose their source wait for it).
        api=ApiSettings(heartbeat_s=1.0),
    )
    return with_free_ports(base, tmp_path_factory.mktemp("karma"))


@pytest.fixture(scope="session")
async def karma(stack_settings: Settings) -> AsyncIterator[EmbeddedKarma]:
    missing = _binaries_missing()
    if missing:
        pytest.skip(missing)
    registry = default_registry().extended(TEST_EXECUTORS)
    async with EmbeddedKarma(stack_settings, persistent=False, registry=registry) as running:
        yield running


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start `karma` processes (output in tmp_path/NAME.log); any still running when the
    test ends is killed, so a failed test leaves no stack behind."""
    started: list[KarmaProcess] = []

    def start(args: list[str], env: dict[str, str], name: str) -> KarmaProcess:
        process = KarmaProcess(args, env, tmp_path / f"{name}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.ensure_stopped()


REPORT_KEY = pytest.StashKey[list[str]]()


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Lines for the run's summary (the counts of the campaign and chaos tests)."""
    lines = request.config.stash.setdefault(REPORT_KEY, [])
    name = request.node.name

    def add(line: str) -> None:
        lines.append(f"{name}: {line}")

    return add


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = config.stash.get(REPORT_KEY, [])
    if lines:
        terminalreporter.section("what the hardening tests did")
        for line in lines:
            terminalreporter.write_line(line)
