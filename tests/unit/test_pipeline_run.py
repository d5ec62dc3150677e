"""The decisions a pipeline run takes between steps (pure: what PipelineWorkflow calls)."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from karma.errors import ErrorType, ValidationError
from karma.pipelines.client import PlanOutdatedError, prepare
from karma.pipelines.plan import check, plan
from karma.pipelines.run import PipelineRequest, StepResult, StepState, child_request, decide
from karma.pipelines.spec import parse_spec
from karma.registry import default_registry
from karma.secrets import SecretSealer, is_sealed

SPEC = """
name: run
params:
  env: {type: string, default: dev}
  token: {type: string, secret: true}
steps:
  - {id: a, action: log, params: {message: "a"}}
  - {id: b, action: log, params: {message: "b"}}
  - id: c
    action: log
    needs: [a, b]
    if: "steps.a.state == 'succeeded'"
    params: {message: "${{ steps.a.outputs.logged }} in ${{ params.env }}"}
  - id: d
    action: log
    needs: [a]
    retry: {max_attempts: 2}
    params: {message: "${{ steps.a.outputs.logged }}"}
"""


def results(**states: StepState) -> dict[str, StepResult]:
    out = {s: StepResult(id=s, action="log", state=st) for s, st in states.items()}
    for result in out.values():
        if result.state is StepState.SUCCEEDED:
            result.outputs = {"logged": f"out-{result.id}"}
    return out


def test_a_step_whose_needs_succeeded_gets_its_params_resolved() -> None:
    spec = parse_spec(SPEC)
    steps = results(a=StepState.SUCCEEDED, b=StepState.SUCCEEDED)
    assert decide(spec.step("c"), steps, {"env": "prod"}) == {"message": "out-a in prod"}


@pytest.mark.parametrize(
    ("a", "b", "state", "reason"),
    [
        (StepState.SKIPPED, StepState.SKIPPED, StepState.SKIPPED, "every step it needs is skipped"),
        (StepState.SKIPPED, StepState.NOT_RUN, StepState.SKIPPED, "every step it needs is skipped"),
        (StepState.FAILED, StepState.SUCCEEDED, StepState.SKIPPED, "needs a, which did not"),
        (StepState.SUCCEEDED, StepState.TIMED_OUT, StepState.SKIPPED, "needs b, which did not"),
        (StepState.SKIPPED, StepState.SUCCEEDED, StepState.SKIPPED, "reads the outputs of a"),
    ],
)
def test_a_step_is_skipped_when_what_it_needs_did_not_succeed(
    a: StepState, b: StepState, state: StepState, reason: str
) -> None:
    decided = decide(parse_spec(SPEC).step("c"), results(a=a, b=b), {"env": "dev"})
    assert not isinstance(decided, dict)
    assert decided[0] is state and decided[1].startswith(reason), decided


def test_a_false_condition_skips_and_a_broken_one_fails_the_step() -> None:
    text = SPEC.replace("steps.a.state == 'succeeded'", "steps.a.outputs.logged == 'x'")
    decided = decide(
        parse_spec(text).step("c"), results(a=StepState.SUCCEEDED, b=StepState.SUCCEEDED), {}
    )
    assert not isinstance(decided, dict) and decided[0] is StepState.SKIPPED
    assert decided[1] == "condition false: steps.a.outputs.logged == 'x'"
    text = SPEC.replace("steps.a.state == 'succeeded'", "steps.a.outputs.logged + 1")
    decided = decide(
        parse_spec(text).step("c"), results(a=StepState.SUCCEEDED, b=StepState.SUCCEEDED), {}
    )
    assert not isinstance(decided, dict) and decided[0] is StepState.FAILED
    assert decided[2] is not None and decided[2].type is ErrorType.VALIDATION
    assert decided[2].fields[0].field == "steps.c.if"


def test_a_steps_action_is_named_by_the_pipeline_and_the_step() -> None:
    spec = parse_spec(SPEC)
    request = PipelineRequest(pipeline_id="pl_1", spec=spec, tenant="t", entity_id="e")
    first = child_request(request, spec.step("d"), {"message": "x"})
    assert first.action_id == child_request(request, spec.step("d"), {"message": "y"}).action_id
    other = PipelineRequest(pipeline_id="pl_2", spec=spec, tenant="t", entity_id="e")
    assert child_request(other, spec.step("d"), {"message": "x"}).action_id != first.action_id
    assert first.correlation_id == "pl_1" and first.entity_id == "e" and first.tenant == "t"
    assert first.tags["pipeline_step"] == "d" and first.max_attempts == 2
    assert request.as_action().event_tags["action"] == "pipeline"


def test_secret_params_are_sealed_redacted_and_only_given_whole() -> None:
    registry = default_registry()
    spec = parse_spec(SPEC)
    sealer = SecretSealer(Fernet.generate_key())
    request = prepare(spec, registry, {"token": "hunter2"}, sealer=sealer)
    assert is_sealed(request.params["token"]) and "hunter2" not in request.model_dump_json()
    assert request.redacted_params()["token"] == "***"
    planned = plan(spec, registry, {"token": "hunter2"})
    assert "hunter2" not in str(planned.as_json())
    leaky = SPEC.replace('params: {message: "a"}', 'params: {message: "t=${{ params.token }}"}')
    with pytest.raises(ValidationError) as caught:
        prepare(parse_spec(leaky), registry, {"token": "x"}, sealer=sealer)
    assert caught.value.errors[0].field == "steps.a.params.message"
    assert "secret" in caught.value.errors[0].reason


def test_a_saved_plan_names_what_changed() -> None:
    registry = default_registry()
    spec = parse_spec(SPEC)
    saved = plan(spec, registry, {"env": "dev"}).as_json()
    prepare(spec, registry, {"env": "dev"}, sealer=None, saved_plan=saved)
    with pytest.raises(PlanOutdatedError, match="the params changed"):
        prepare(spec, registry, {"env": "prod"}, sealer=None, saved_plan=saved)
    changed = parse_spec(SPEC.replace("max_attempts: 2", "max_attempts: 3"))
    with pytest.raises(PlanOutdatedError, match="the spec changed"):
        prepare(changed, registry, {"env": "dev"}, sealer=None, saved_plan=saved)
    with pytest.raises(PlanOutdatedError, match="the action types it uses changed"):
        prepare(
            spec, registry, {"env": "dev"}, sealer=None, saved_plan={**saved, "registry_hash": "0"}
        )


def test_secrets_never_share_a_value_with_references_nor_feed_conditions() -> None:
    registry = default_registry()
    mixed = """
name: mixed
params:
  region: {type: string, default: eu}
  flag: {type: boolean, secret: true, default: false}
  pin: {type: number, secret: true, required: true}
steps:
  - id: a
    action: command
    if: "params.flag"
    params:
      argv: [echo]
      env: {TOKEN: written-secret, REGION: "${{ params.region }}"}
"""
    with pytest.raises(ValidationError) as caught:
        check(parse_spec(mixed), registry)
    fields = {e.field: e.reason for e in caught.value.errors}
    assert "written whole" in fields["steps.a.params.env"]
    assert fields["steps.a.if"] == "params.flag is secret"
    # A secret number given whole to a secret param plans (its type is checked at run).
    whole = """
name: whole
params:
  headers: {type: json, secret: true, required: true}
steps:
  - id: a
    action: http_request
    params: {url: "http://x", headers: "${{ params.headers }}"}
  - id: b
    action: command
    needs: [a]
    params: {argv: [echo], env: "${{ steps.a.outputs.body }}"}
"""
    planned = plan(parse_spec(whole), registry, {"headers": {"Authorization": "Bearer t0k3n"}})
    shown = str(planned.as_json())
    assert "t0k3n" not in shown and planned.steps["a"].params["headers"] == "***"
    assert planned.steps["b"].known_after == {"env": ["a"]}


def test_reserved_tags_are_refused() -> None:
    spec = parse_spec(SPEC)
    with pytest.raises(ValidationError) as caught:
        prepare(spec, default_registry(), {}, sealer=None, tags={"tenant": "x", "pipeline": "y"})
    assert {e.field for e in caught.value.errors} == {"tags.tenant", "tags.pipeline"}
