"""Invalid input for every parameter type, through the SDK and the CLI: a clear error
naming the parameter, exit 2 from the CLI, nothing started."""

from __future__ import annotations

from typing import Any

import pytest

from karma.errors import ActionNotFoundError, ValidationError
from karma.ids import action_id_for_key
from tests.conftest import unique
from tests.support.processes import karma_env, run_karma
from workers.embedded import EmbeddedKarma

GOOD = {"text": "t"}
SDK_CASES: list[tuple[str, Any, str]] = [
    ("text", 5, "must be a string"),
    ("text", "x" * 300_000, "bytes; the request is"),
    ("count", "many", "must be a number"),
    ("count", 11, "must be <= 10"),
    ("count", float("nan"), "must be a finite number"),
    ("count", True, "must be a number"),
    ("flag", "yes", "must be true or false"),
    ("colour", "blue", "must be one of ['red', 'green']"),
    ("sizes", "s", "must be a list"),
    ("sizes", ["s", "xl"], "['xl'] not among ['s', 'm', 'l']"),
    ("sizes", ["s", "s"], "must not repeat a choice"),
    ("doc", {"n": float("inf")}, "must be JSON-serialisable"),
    ("doc", object(), "must be JSON-serialisable"),
    ("nope", 1, "unknown parameter"),
]


@pytest.mark.parametrize(("name", "value", "reason"), SDK_CASES)
async def test_the_sdk_refuses_bad_values_of_every_type(
    karma: EmbeddedKarma, name: str, value: Any, reason: str
) -> None:
    key = unique("bad-sdk")
    with pytest.raises(ValidationError) as caught:
        await karma.client.request("test.every_type", {**GOOD, name: value}, idempotency_key=key)
    assert [e.field for e in caught.value.errors] == [f"params.{name}"]
    assert reason in caught.value.errors[0].reason
    with pytest.raises(ActionNotFoundError):
        await karma.client.handle(action_id_for_key(key)).status()


async def test_the_sdk_refuses_a_missing_required_parameter_and_overlong_ids(
    karma: EmbeddedKarma,
) -> None:
    with pytest.raises(ValidationError, match=r"params\.text: required parameter is missing"):
        await karma.client.request("test.every_type", {})
    with pytest.raises(ValidationError, match="entity_id: String should have at most 512"):
        await karma.client.request("test.every_type", GOOD, entity_id="e" * 10_000)


# Built-in actions cover every type for the CLI (it validates with the installed registry).
CLI_CASES: list[tuple[list[str], str]] = [
    (["log", "-p", "message="], ""),  # a valid empty string: the control case
    (["delay", "-p", "seconds=soon"], "params.seconds: must be a number, got 'soon'"),
    (["delay", "-p", "seconds=nan"], "params.seconds: must be a finite number"),
    (["delay", "-p", "seconds=-1"], "params.seconds: must be >= 0"),
    (["demo.provision", "-p", "already_provisioned=maybe"], "must be true or false"),
    (["log", "-p", "message=x", "-p", "level=loud"], "params.level: must be one of"),
    (["demo.provision", "-p", "features=tls,gold"], "params.features: ['gold'] not among"),
    (["demo.provision", "-p", "features=[1"], "params.features: not JSON"),
    (["http_request", "-p", "url=http://x", "-p", "body={"], "params.body: not JSON"),
    (["http_request", "-p", "url=http://x", "-p", "body=NaN"], "NaN is not valid JSON"),
    (["http_request", "-p", "url=http://x", "-p", "body=" + "[" * 100], "nested more than 64"),
    (["log", "--params-json", '{"message": 1}'], "params.message: must be a string"),
    (["log", "--params-json", '{"message": "\\ud800"}'], "lone UTF-16 surrogate"),
    (["log", "-p", "message=x", "--entity-id", "e" * 600], "entity_id: String should have"),
    (["log"], "params.message: required parameter is missing"),
    (["no.such.action"], "action_type: unknown action 'no.such.action'"),
]


@pytest.mark.parametrize(("args", "reason"), CLI_CASES)
async def test_the_cli_refuses_bad_values_of_every_type_with_exit_2(
    karma: EmbeddedKarma, args: list[str], reason: str
) -> None:
    key = unique("bad-cli")
    code, out = await run_karma(["request", *args, "-k", key], karma_env(karma.settings))
    if not reason:
        assert code == 0, out
        return
    assert code == 2, out
    assert reason in out, out
    assert "Traceback" not in out
    assert out.count("\n") == 1, out
    with pytest.raises(ActionNotFoundError):
        await karma.client.handle(action_id_for_key(key)).status()
