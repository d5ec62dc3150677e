"""TEMPLATE and REF parameters without a stack: compile errors with their line, the
bounded sandbox, what a template sees, resolvers' verdicts (canonical id, dangling, no
resolver, a system that cannot answer), and the choices a schema offers."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import pytest

from karma import templates as templates_module
from karma.errors import TransientError, ValidationError
from karma.meta import ActionMeta, ParamDefinition, ParamType
from karma.params import params_json_schema, render_templates, validate_params
from karma.refs import RefChoice, ReferenceResolver, offer_choices, resolve_refs
from karma.templates import render_isolated

META = ActionMeta(
    type="t.scale",
    name="scale",
    params=(
        ParamDefinition(name="cluster", type=ParamType.REF, ref_kind="cluster", required=True),
        ParamDefinition(name="pool", type=ParamType.REF, ref_kind="pool"),
        ParamDefinition(name="size", type=ParamType.NUMBER, default=3),
        ParamDefinition(name="token", type=ParamType.STRING, secret=True),
        ParamDefinition(name="note", type=ParamType.TEMPLATE, default="{{ params.size }} nodes"),
    ),
)


class Clusters(ReferenceResolver):
    kind = "cluster"
    known: ClassVar[dict[str, str]] = {"prod-eu": "cls-1", "cls-1": "cls-1"}

    async def resolve(self, value: str, services: Mapping[str, str]) -> str | None:
        if value == "flaky":
            raise TransientError("inventory unreachable")
        if value == "broken":
            raise RuntimeError("inventory answered nonsense")
        return self.known.get(value)

    async def choices(self, services: Mapping[str, str]) -> list[RefChoice] | None:
        return [RefChoice(id="cls-1", label="prod-eu")]


RESOLVERS = {"cluster": Clusters()}


def test_a_template_that_does_not_compile_is_refused_with_its_line() -> None:
    with pytest.raises(ValidationError) as caught:
        validate_params(META, {"cluster": "x", "note": "ok\n\n{% if %}"})
    [error] = caught.value.errors
    assert error.field == "params.note" and error.reason.startswith("does not compile (line 3)")
    with pytest.raises(ValidationError, match="must be a string"):
        validate_params(META, {"cluster": "x", "note": 5})


async def test_a_template_sees_params_and_context_but_no_secret() -> None:
    params = validate_params(META, {"cluster": "cls-1", "token": "s3cret"})
    context = {"entity_id": "svc", "steps": {"a": {"outputs": {"v": 2}}}}
    note = {"note": "{{ params.cluster }}/{{ entity_id }}/{{ steps.a.outputs.v * 2 }}"}
    assert (await render_templates(META, {**params, **note}, context))["note"] == "cls-1/svc/4"
    assert (await render_templates(META, params, context))["note"] == "3 nodes"  # the default
    for template in ("{{ params.token }}", "{{ params.note }}", "{{ nowhere }}"):
        with pytest.raises(ValidationError) as caught:
            await render_templates(META, {**params, "note": template}, context)
        assert caught.value.errors[0].field == "params.note"


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{{ ''.__class__.__mro__ }}", "unsafe"),
        ("{{ [].append(1) }}", "unsafe"),
        ("{{ 'ab' * 40000 }}", "80,000 items is over"),
        ("{{ [1] * 70000 }}", "over the 65,536"),
        ("{{ 10 ** 100000 }}", "exponent"),
        ("{% for i in range(30000) %}{{ i }}{% endfor %}", "more than 65,536 characters"),
        ("{{ " + "(" * 200 + "1" + ")" * 200 + " }}", "does not compile"),
        ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "RecursionError"),
        # What only the child process's bounds stop: time, CPU, memory.
        (
            "{% set r = range(99999) %}{% for a in r %}{% for b in r %}{% endfor %}{% endfor %}",
            "within 3 s of CPU",
        ),
        ("{{ 'x' | center(300000000) }}", "ran out of memory"),
        (
            "{% set a = 'ab' * 30000 %}" + "{% set a = a ~ a %}" * 14 + "{{ a | length }}",
            "ran out of memory",
        ),
    ],
)
async def test_the_sandbox_refuses_internals_huge_values_and_long_work(
    template: str, reason: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        await render_templates(META, {"cluster": "c", "size": 3, "note": template}, {})
    [error] = caught.value.errors
    assert error.field == "params.note" and reason in error.reason, error.reason


async def test_errors_about_a_secret_template_do_not_quote_it() -> None:
    meta = ActionMeta(
        type="t.hook",
        name="hook",
        params=(ParamDefinition(name="url", type=ParamType.TEMPLATE, secret=True),),
    )
    with pytest.raises(ValidationError) as caught:
        validate_params(meta, {"url": "https://h/T0KEN/{{ entity_id foo-SECRET }}"})
    assert caught.value.errors[0].reason == "the secret template cannot be used (line 1)"
    with pytest.raises(ValidationError) as caught:
        await render_templates(meta, {"url": "https://h/{{ SECRET_NAME }}"}, {})
    assert "SECRET" not in caught.value.errors[0].reason


async def test_references_resolve_to_canonical_ids_or_fail_by_name() -> None:
    resolved = await resolve_refs(META, {"cluster": "prod-eu", "size": 3}, {}, RESOLVERS)
    assert resolved == {"cluster": "cls-1", "size": 3}
    with pytest.raises(ValidationError) as caught:
        await resolve_refs(META, {"cluster": "prod-mars", "pool": "p1"}, {}, RESOLVERS)
    assert {e.field: e.reason for e in caught.value.errors} == {
        "params.cluster": "dangling reference: no cluster 'prod-mars'",
        "params.pool": "no resolver of 'pool' references on this worker",
    }
    with pytest.raises(ValidationError, match="cannot be checked: inventory answered nonsense"):
        await resolve_refs(META, {"cluster": "broken"}, {}, RESOLVERS)
    with pytest.raises(TransientError):  # retried by prepare_action, then a failure
        await resolve_refs(META, {"cluster": "flaky"}, {}, RESOLVERS)


async def test_the_schema_marks_references_and_templates_and_offers_choices() -> None:
    schema = params_json_schema(META)
    assert schema["properties"]["cluster"] == {
        "type": "string", "minLength": 1, "x-karma-ref-kind": "cluster",
    }  # fmt: skip
    assert schema["properties"]["note"]["x-karma-template"] == "jinja2"
    offered = await offer_choices(schema, {}, RESOLVERS)
    assert offered["properties"]["cluster"]["examples"] == ["cls-1"]
    assert offered["properties"]["cluster"]["x-karma-choices"] == [
        {"id": "cls-1", "label": "prod-eu"}
    ]
    assert "examples" not in offered["properties"]["pool"]  # no resolver: as it was


def test_a_reference_needs_its_kind() -> None:
    with pytest.raises(ValueError, match="ref_kind goes with"):
        ParamDefinition(name="c", type=ParamType.REF)
    with pytest.raises(ValueError, match="ref_kind goes with"):
        ParamDefinition(name="c", type=ParamType.STRING, ref_kind="cluster")
    with pytest.raises(ValidationError, match="must name a cluster"):
        validate_params(META, {"cluster": "  "})


async def test_a_renderer_that_cannot_run_is_the_workers_problem_not_the_requests(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    templates = {"params.note": "{{ 'SECRET-TEXT' }}"}
    # Too slow (a busy worker): transient, retried.
    with pytest.raises(TransientError, match=r"longer than 0\.001 s"):
        await render_isolated(templates, {}, timeout_s=0.001)
    # A child that breaks by itself: transient, logged without what it was given.
    broken = tmp_path / "broken.py"
    broken.write_text("import sys\nraise ImportError('no jinja2 here: SECRET-TEXT')\n")
    monkeypatch.setattr(templates_module, "_CHILD", str(broken))
    with pytest.raises(TransientError, match=r"renderer failed \(exit 1\)"):
        await render_isolated(templates, {})
    assert "ImportError" in caplog.text and "SECRET" not in caplog.text
    # No process to be had.
    monkeypatch.setattr(templates_module, "_PYTHON", str(tmp_path / "no-python"))
    with pytest.raises(TransientError, match="cannot start the template renderer"):
        await render_isolated(templates, {})


def test_a_continued_runs_params_are_taken_as_prepared() -> None:
    # Rendered text may be empty or look like a template; a canonical id may be long.
    prepared = {"cluster": "arn:" + "x" * 600, "note": "", "size": 3}
    assert validate_params(META, prepared, rendered=True)["note"] == ""
    assert validate_params(META, {**prepared, "note": "{{ raw"}, rendered=True)["note"] == "{{ raw"
    with pytest.raises(ValidationError, match="must be a string"):
        validate_params(META, {**prepared, "cluster": ""}, rendered=True)
    with pytest.raises(ValidationError, match="at most 512 characters"):
        validate_params(META, prepared)  # a request's reference is bounded
