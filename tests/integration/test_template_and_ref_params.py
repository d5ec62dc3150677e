"""TEMPLATE and REF parameters on the real stack: references checked by the built-in
resolvers against the reference service's inventory before the action is accepted (a
dangling one fails validation by name), templates rendered against the action's context
(and a pipeline step's against the outputs of the steps it needs), and the resolver's
choices offered by the API's JSON Schema."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from karma.errors import ValidationError
from karma.lifecycle import ActionState, EventType
from karma.pipelines.spec import parse_spec
from karma.status import ActionOutcome
from tests.support.api import admin_key, bearer
from workers.embedded import EmbeddedKarma

TIMEOUT_S = 60

PIPELINE = """
name: refs
steps:
  - id: place
    action: test.refs
    params: {cluster: prod-us, model: mistral-7b}
  - id: announce
    action: test.refs
    needs: [place]
    params:
      cluster: cls-dev-1
      message: >-
        {{ steps.place.outputs.message | upper }}
        (was on {{ steps.place.outputs.cluster }})
"""


async def outcome_of(karma: EmbeddedKarma, params: dict[str, object], **kw: str) -> ActionOutcome:
    handle = await karma.client.request("test.refs", params, **kw)  # type: ignore[arg-type]
    return await asyncio.wait_for(handle.result(), TIMEOUT_S)


async def test_references_resolve_and_templates_render_before_acceptance(
    karma: EmbeddedKarma,
) -> None:
    handle = await karma.client.request(
        "test.refs",
        {
            "cluster": "prod-eu",  # a name: the executor gets the canonical id
            "model": "mdl-7f3a",  # already an id
            "token": "s3cret-value",
            "message": "{{ action_type }}: {{ params.model }} on {{ params.cluster }} "
            "for {{ entity_id }} ({{ tags.team }}){% if params.token is defined %}!{% endif %}",
        },
        entity_id="svc-9",
        tags={"team": "sre"},
    )
    outcome = await asyncio.wait_for(handle.result(), TIMEOUT_S)
    assert outcome.state is ActionState.SUCCEEDED
    # Secrets are not in a template's context; resolved references are.
    assert outcome.outputs == {
        "cluster": "cls-eu-1",
        "message": "test.refs: mdl-7f3a on cls-eu-1 for svc-9 (sre)",
    }
    status = await handle.status()
    [accepted] = [t for t in status.transitions if t.event_type is EventType.ACCEPTED]
    assert accepted.attrs["args"]["cluster"] == "cls-eu-1"
    assert accepted.attrs["args"]["token"] == "***"
    # The default template, rendered too.
    plain = await outcome_of(karma, {"cluster": "dev"})
    assert plain.outputs["message"] == "scaling nothing on cls-dev-1"


async def test_dangling_references_and_bad_templates_are_refused_by_name(
    karma: EmbeddedKarma,
) -> None:
    dangling = await outcome_of(karma, {"cluster": "prod-mars", "model": "gpt-99"})
    assert dangling.state is ActionState.FAILED and dangling.error is not None
    assert dangling.error.type.value == "validation"
    fields = {f.field: f.reason for f in dangling.error.fields}
    assert fields == {
        "params.cluster": "dangling reference: no cluster 'prod-mars'",
        "params.model": "dangling reference: no model 'gpt-99'",
    }
    # A template that does not compile never reaches Temporal: the client refuses it.
    with pytest.raises(ValidationError) as caught:
        await karma.client.request("test.refs", {"cluster": "dev", "message": "x\n{{ oops"})
    [error] = caught.value.errors
    assert error.field == "params.message" and "line 2" in error.reason
    # One that compiles but reads what is not there, or builds too much, fails validation.
    for template, expected in [
        ("{{ params.token }}", "has no attribute 'token'"),
        ("{{ ''.__class__.__mro__ }}", "unsafe"),
        ("{{ 'x' * 10000000 }}", "over the 65,536"),
        ("{% for i in range(99999) %}{{ i }}{% endfor %}", "more than 65,536 characters"),
    ]:
        failed = await outcome_of(karma, {"cluster": "dev", "message": template})
        assert failed.state is ActionState.FAILED and failed.error is not None
        [field] = failed.error.fields
        assert field.field == "params.message" and expected in field.reason, field.reason


async def test_a_pipeline_step_template_reads_earlier_outputs(karma: EmbeddedKarma) -> None:
    handle = await karma.client.start_pipeline(parse_spec(PIPELINE))
    result = await asyncio.wait_for(handle.result(), TIMEOUT_S)
    assert result.state is ActionState.SUCCEEDED
    steps = {s.id: s for s in result.steps}
    assert steps["place"].outputs["message"] == "scaling mdl-91c2 on cls-us-1"
    assert steps["announce"].outputs["message"] == (
        "SCALING MDL-91C2 ON CLS-US-1 (was on cls-us-1)"
    )


async def test_the_schema_offers_each_reference_s_choices(karma: EmbeddedKarma) -> None:
    assert karma.api is not None
    headers = bearer(admin_key(karma))
    async with httpx.AsyncClient(base_url=karma.api.url, headers=headers, timeout=30) as api:
        response = await api.get("/v1/action-types/test.refs")
    assert response.status_code == 200
    properties = response.json()["params_schema"]["properties"]
    cluster = properties["cluster"]
    assert cluster["x-karma-ref-kind"] == "cluster"
    assert cluster["examples"] == ["cls-eu-1", "cls-us-1", "cls-dev-1"]
    assert cluster["x-karma-choices"][0] == {"id": "cls-eu-1", "label": "prod-eu"}
    assert properties["model"]["examples"] == ["mdl-7f3a", "mdl-91c2"]
    assert properties["message"]["x-karma-template"] == "jinja2"


async def test_a_continued_run_keeps_what_the_first_run_prepared(karma: EmbeddedKarma) -> None:
    service = karma.reference_service
    assert service is not None
    handle = await karma.client.request("test.placed", {"cluster": "prod-us"})
    async for transition in handle.transitions(poll_interval=0.05):
        if transition.event_type is EventType.PROGRESS:  # accepted: the reference checked
            break
    removed = service.inventory["cluster"].pop("cls-us-1")
    try:
        outcome = await asyncio.wait_for(handle.result(), TIMEOUT_S)
    finally:
        service.inventory["cluster"]["cls-us-1"] = removed
    # Three runs, one canonical id, and the rendered text never rendered again.
    assert outcome.state is ActionState.SUCCEEDED, outcome.error
    assert outcome.outputs == {"clusters": ["cls-us-1"], "notes": ["{{ raw"]}
