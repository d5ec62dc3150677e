"""Pipeline specs checked before anything runs, references, conditions, waves and plans."""

from __future__ import annotations

from pathlib import Path

import pytest

from karma.errors import ValidationError
from karma.pipelines.plan import Unknown, check, evaluate, plan, resolve, waves
from karma.pipelines.spec import load_spec, names_used, parse_spec
from karma.registry import default_registry

EXAMPLE = Path(__file__).parents[2] / "examples" / "pipelines" / "release.yaml"

DIAMOND = """
name: diamond
params:
  env: {type: select, options: [dev, prod], default: dev}
  n: {type: number, default: 2}
steps:
  - {id: a, action: log, params: {message: "start ${{ params.env }}"}}
  - {id: b, action: delay, needs: [a], params: {seconds: 0}}
  - {id: c, action: demo.flaky, needs: [a], if: "params.env == 'prod'", params: {failures: 0}}
  - id: d
    action: log
    needs: [b, c]
    params: {message: "${{ steps.b.outputs.slept_seconds }}"}
"""


def errors_of(text: str) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        check(parse_spec(text), default_registry())
    return {e.field: e.reason for e in caught.value.errors}


def test_the_shipped_example_is_valid_and_plans() -> None:
    spec = load_spec(EXAMPLE)
    check(spec, default_registry())
    planned = plan(spec, default_registry(), {"version": "1.4.2", "canary": "false"})
    assert planned.waves == [["announce-start"], ["provision", "warm-up"], ["canary"],
                             ["announce-done"]]  # fmt: skip
    assert planned.steps["canary"].runs is False
    assert planned.steps["announce-done"].runs is True  # it needs provision too
    done = planned.steps["announce-done"]
    assert done.params["message"].startswith("released 1.4.2 at ${{ steps.provision")
    assert done.known_after == {"message": ["provision"]}


def test_waves_put_independent_steps_together() -> None:
    assert waves(parse_spec(DIAMOND)) == [["a"], ["b", "c"], ["d"]]


def test_a_false_condition_skips_the_step_and_what_only_needs_it() -> None:
    text = DIAMOND.replace("needs: [b, c]", "needs: [c]").replace("slept_seconds", "attempts")
    text = text.replace("steps.b.outputs", "steps.c.outputs")
    planned = plan(parse_spec(text), default_registry(), {})
    assert planned.steps["c"].runs is False and "condition false" in planned.steps["c"].reason
    assert planned.steps["d"].runs is False
    assert plan(parse_spec(text), default_registry(), {"env": "prod"}).steps["c"].runs is True


def test_a_condition_on_an_earlier_result_is_decided_later() -> None:
    text = DIAMOND.replace(
        "if: \"params.env == 'prod'\"", 'if: "steps.b.outputs.slept_seconds > 1"'
    )
    text = text.replace("needs: [a], if", "needs: [a, b], if")
    planned = plan(parse_spec(text), default_registry(), {})
    assert planned.steps["c"].runs is None and "after step b" in planned.steps["c"].reason


def test_references_keep_their_type_or_interpolate() -> None:
    params, steps = {"n": 3, "env": "prod"}, {"b": {"outputs": {"slept_seconds": 0.5}}}
    assert resolve("${{ params.n }}", params, steps) == 3
    assert resolve("x-${{ params.n }}-${{ params.env }}", params, steps) == "x-3-prod"
    # Two references that make up the whole value are text, not one expression.
    assert resolve("${{ params.n }} in ${{ params.env }}", params, steps) == "3 in prod"
    assert resolve({"k": ["${{ steps.b.outputs.slept_seconds }}"]}, params, steps) == {"k": [0.5]}
    with pytest.raises(Unknown):
        resolve("${{ steps.c.outputs.attempts }}", params, steps)
    assert evaluate("params.n * 2 > 5 and params.env == 'prod'", params, steps) is True
    with pytest.raises(ValidationError):
        evaluate("__import__('os')", params, steps)  # simpleeval refuses it


def test_names_read_by_an_expression() -> None:
    assert names_used("steps.b.outputs.x > params.n and not params.flag") == [
        ("steps", "b", "outputs", "x"), ("params", "n"), ("params", "flag"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        (("needs: [b, c]", "needs: [b, zz]"), "steps.d.needs", "no step 'zz'"),
        (("needs: [a]", "needs: [d]"), "steps.b.needs", "cycle"),
        (("action: delay", "action: no.such"), "steps.b.action", "unknown action type"),
        (("{seconds: 0}", "{seconds: 0, speed: 2}"), "steps.b.params.speed", "no parameter"),
        (("{seconds: 0}", "{seconds: -1}"), "steps.b.params.seconds", ">="),
        (("{message: \"start ${{ params.env }}\"}", "{}"), "steps.a.params.message", "missing"),
        (("${{ params.env }}", "${{ params.no }}"), "steps.a.params.message", "no pipeline param"),
        (("slept_seconds }}", "nope }}"), "steps.d.params.message", "declares no such output"),
        (("needs: [b, c]", "needs: [c]"), "steps.d.params.message", "not a step this one needs"),
        (("params.env == 'prod'", "params.env =="), "steps.c.if", "does not parse"),
        (("params.env == 'prod'", "os.system"), "steps.c.if", "names start with"),
    ],
)  # fmt: skip
def test_each_problem_names_its_step_and_field(
    change: tuple[str, str], field: str, reason: str
) -> None:
    found = errors_of(DIAMOND.replace(*change))
    assert field in found and reason in found[field], found


def test_params_given_are_typed_checked_and_named() -> None:
    spec = parse_spec(DIAMOND)
    assert plan(spec, default_registry(), {"n": "5"}).params == {"env": "dev", "n": 5}
    with pytest.raises(ValidationError) as caught:
        plan(spec, default_registry(), {"n": "many", "env": "qa", "extra": "1"})
    assert {e.field for e in caught.value.errors} == {"params.n", "params.env", "params.extra"}


def test_a_plan_hash_follows_the_spec_the_registry_and_the_params() -> None:
    spec = parse_spec(DIAMOND)
    first = plan(spec, default_registry(), {}).plan_hash
    assert first == plan(parse_spec(DIAMOND), default_registry(), {}).plan_hash
    assert first != plan(spec, default_registry(), {"n": "3"}).plan_hash
    changed = parse_spec(DIAMOND.replace("{seconds: 0}", "{seconds: 1}"))
    assert first != plan(changed, default_registry(), {}).plan_hash


def test_expected_durations_follow_the_longest_path() -> None:
    durations = {"log": (10.0, 20.0), "delay": (100.0, 300.0), "demo.flaky": (50.0, 60.0)}
    planned = plan(parse_spec(DIAMOND), default_registry(), {"env": "prod"}, durations)
    assert (planned.p50_ms, planned.p90_ms) == (120.0, 340.0)  # a -> b -> d


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("params.env.upper()", "Call is not allowed"),
        ("(lambda: 1)()", "not allowed"),
        ("[x for x in params.env]", "not allowed"),
        ("params.env.__class__", "names starting with _"),
        ("steps['zz'].outputs.attempts", "not a step this one needs"),
        ("steps", "name what it reads"),
        ("params['nope']", "no pipeline param"),
        ("1+" * 2000 + "1", "longer than"),
    ],
)
def test_expressions_only_read(expression: str, reason: str) -> None:
    text = DIAMOND.replace("params.env == 'prod'", expression.replace('"', "'"))
    found = errors_of(text)
    assert "steps.c.if" in found and reason in found["steps.c.if"], found


def test_expressions_cannot_change_params_or_read_dict_methods() -> None:
    params = {"tags": ["a"], "items": False}
    assert evaluate("params.items", params, {}) is False  # the key, not dict.items
    value = evaluate("params.tags", params, {})
    value.append("evil")
    assert params == {"tags": ["a"], "items": False}
    with pytest.raises(ValidationError) as caught:
        resolve("v${{ 10 ** 5000 }}", {}, {}, field="steps.x.params.y")
    assert caught.value.errors[0].field == "steps.x.params.y"


def test_hyphenated_step_ids_are_read_by_subscript() -> None:
    text = DIAMOND.replace("id: b,", "id: warm-up,").replace("[b, c]", "[warm-up, c]")
    text = text.replace("steps.b.outputs.slept_seconds", "steps['warm-up'].outputs.slept_seconds")
    check(parse_spec(text), default_registry())


def test_hostile_specs_are_refused_with_a_reason() -> None:
    bomb = "a: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(6)
    )
    with pytest.raises(ValidationError) as caught:
        parse_spec(bomb)
    assert "more than" in caught.value.errors[0].reason
    chain = (
        "name: long\nsteps:\n"
        + "".join(
            f"  - {{id: s{i}, action: log, params: {{message: x}}, needs: [s{i + 1}]}}\n"
            for i in range(400)
        )
        + "  - {id: s400, action: log, params: {message: x}}\n"
    )
    spec = parse_spec(chain)
    check(spec, default_registry())  # no recursion limit on a long chain
    assert len(waves(spec)) == 401
    cycle = chain.replace("params: {message: x}}\n", "params: {message: x}, needs: [s0]}\n")
    found = errors_of(cycle)
    assert "cycle" in next(iter(found.values()))
