"""The CLI rejects bad input before it connects to anything."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from karma.cli.inbound_commands import PAST_TENSE
from karma.cli.main import run
from karma.cli.params import parse_params
from karma.errors import ValidationError
from karma.interactive import Verdict
from karma.registry import default_registry
from karma.settings import get_settings
from karma.since import parse_since


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    """Settings are cached per process; these tests change the environment."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_params_are_typed_by_the_action_metadata() -> None:
    meta = default_registry().meta("http_request")
    params = parse_params(
        meta,
        ["url=http://x", "expected_status=201", "timeout_seconds=1.5", 'headers={"A": "b"}'],
    )
    assert params == {
        "url": "http://x",
        "expected_status": 201,
        "timeout_seconds": 1.5,
        "headers": {"A": "b"},
    }


def test_malformed_params_are_all_reported() -> None:
    meta = default_registry().meta("http_request")
    with pytest.raises(ValidationError) as caught:
        parse_params(meta, ["url", "expected_status=many", "body={", "url=a", "url=b"])
    assert [str(e) for e in caught.value.errors] == [
        "--param 'url': expected NAME=VALUE",
        "params.expected_status: must be a number, got 'many'",
        "params.body: not JSON: Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)",
        "params.url: given more than once",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["request", "restart_everything"], "unknown action 'restart_everything'"),
        (["request", "delay"], "params.seconds: required parameter is missing"),
        (["request", "delay", "-p", "seconds=-1"], "params.seconds: must be >= 0"),
        (["request", "delay", "-p", "seconds"], "--param 'seconds': expected NAME=VALUE"),
        (["request", "log", "-p", "message=x", "-p", "colour=red"], "params.colour: unknown"),
        (
            ["request", "log", "--params-json", "[1]"],
            "--params-json: expected a JSON object, got an array",
        ),
    ],
)
def test_bad_requests_exit_2_naming_the_field_without_connecting(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Nothing listens here: reaching Temporal would fail differently (exit 3).
    monkeypatch.setenv("KARMA_TEMPORAL__ADDRESS", "127.0.0.1:1")
    assert run(argv) == 2
    assert message in capsys.readouterr().err


def test_unreachable_temporal_is_reported_as_unavailable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KARMA_TEMPORAL__ADDRESS", "127.0.0.1:1")
    assert run(["status", "act_x"]) == 3
    assert "karma:" in capsys.readouterr().err


def test_help_explains_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run(["--help"])
    out = capsys.readouterr().out
    assert "KARMA_TEMPORAL__ADDRESS" in out
    assert "karma request delay --param seconds=5 --wait" in out


def test_actions_lists_the_catalogue_and_exports_schemas(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(["actions"]) == 0
    out = capsys.readouterr().out
    for action_type in ("delay", "demo.flaky", "http_request", "log"):
        assert f"\n{action_type} " in out
    assert "secret (redacted from events)" in out
    assert run(["actions", "delay", "--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["required"] == ["seconds"]
    assert schema["properties"]["seconds"]["minimum"] == 0
    assert run(["actions", "nope"]) == 2


def test_since_takes_a_time_with_a_zone_or_an_age() -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert parse_since("2h", now) == datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    assert parse_since("90s", now) == datetime(2026, 11, 25, 11, 58, 30, tzinfo=UTC)
    assert parse_since("2026-11-24T08:00:00Z") == datetime(2026, 11, 24, 8, tzinfo=UTC)
    assert parse_since("2026-11-24T09:00:00+01:00") == datetime(2026, 11, 24, 8, tzinfo=UTC)
    assert parse_since(None) is None
    for bad in ("2026-11-24T08:00:00", "yesterday", "5w", "9999999999d"):
        with pytest.raises(ValidationError, match="--since: expected a time with a timezone"):
            parse_since(bad)
    for far in ("0001-01-01T00:00:00Z", "700000d", "2400-01-01T00:00:00Z"):
        with pytest.raises(ValidationError, match="between the years 1900 and 2299"):
            parse_since(far, now)
    with pytest.raises(ValidationError, match=r"^until: "):
        parse_since("soon", field="until")


def test_stats_refuse_a_top_outside_its_range() -> None:
    for bad in ("0", "1001", "ten"):
        with pytest.raises(SystemExit) as exited:
            run(["stats", "--top", bad])
        assert exited.value.code == 2


def test_reject_and_approve_say_what_happened() -> None:
    assert PAST_TENSE == {"approve": "approved", "reject": "rejected"}
    assert set(PAST_TENSE) == {v.value for v in Verdict}
