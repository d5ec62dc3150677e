from __future__ import annotations

import pytest

from karma.errors import ValidationError
from karma.meta import ActionMeta, ParamDefinition, ParamType
from karma.params import REDACTED, params_json_schema, redact_params, validate_params

META = ActionMeta(
    type="deploy",
    name="Deploy",
    params=(
        ParamDefinition(name="service", type=ParamType.STRING, required=True),
        ParamDefinition(name="replicas", type=ParamType.NUMBER, min=1, max=10, default=2),
        ParamDefinition(name="dry_run", type=ParamType.BOOLEAN, default=False),
        ParamDefinition(name="region", type=ParamType.SELECT, options=("eu", "us")),
        ParamDefinition(name="zones", type=ParamType.MULTISELECT, options=("a", "b", "c")),
        ParamDefinition(name="labels", type=ParamType.JSON),
        ParamDefinition(name="token", type=ParamType.STRING, secret=True),
    ),
)


def fields(exc: ValidationError) -> dict[str, str]:
    return {e.field: e.reason for e in exc.errors}


def test_defaults_are_applied_and_absent_optionals_left_out() -> None:
    assert validate_params(META, {"service": "api"}) == {
        "service": "api",
        "replicas": 2,
        "dry_run": False,
    }


def test_none_counts_as_absent() -> None:
    assert validate_params(META, {"service": "api", "replicas": None})["replicas"] == 2


def test_every_bad_field_is_reported_with_its_reason() -> None:
    with pytest.raises(ValidationError) as caught:
        validate_params(
            META,
            {
                "replicas": 11,
                "dry_run": "yes",
                "region": "asia",
                "zones": ["a", "z"],
                "labels": {"x": {1, 2}},
                "colour": "red",
            },
        )
    assert fields(caught.value) == {
        "params.service": "required parameter is missing",
        "params.replicas": "must be <= 10",
        "params.dry_run": "must be true or false",
        "params.region": "must be one of ['eu', 'us']",
        "params.zones": "['z'] not among ['a', 'b', 'c']",
        "params.labels": fields(caught.value)["params.labels"],
        "params.colour": "unknown parameter",
    }
    assert fields(caught.value)["params.labels"].startswith("must be JSON-serialisable")
    assert "params.colour: unknown parameter" in str(caught.value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (True, "must be a number"),
        ("3", "must be a number"),
        (0, "must be >= 1"),
        (float("nan"), "must be a finite number"),
    ],
)
def test_number_rules(value: object, reason: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_params(META, {"service": "api", "replicas": value})
    assert fields(caught.value) == {"params.replicas": reason}


def test_multiselect_rejects_repeats_and_accepts_tuples() -> None:
    with pytest.raises(ValidationError, match="must not repeat"):
        validate_params(META, {"service": "api", "zones": ["a", "a"]})
    assert validate_params(META, {"service": "api", "zones": ("a", "b")})["zones"] == ["a", "b"]


def test_secrets_are_redacted_and_unknown_types_redact_everything() -> None:
    params = {"service": "api", "token": "s3cr3t"}
    assert redact_params(META, params) == {"service": "api", "token": REDACTED}
    assert redact_params(None, params) == {"service": REDACTED, "token": REDACTED}


def test_json_schema_describes_every_parameter() -> None:
    schema = params_json_schema(META)
    assert schema["required"] == ["service"]
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    assert props["replicas"] == {"type": "number", "minimum": 1, "maximum": 10, "default": 2}
    assert props["region"] == {"type": "string", "enum": ["eu", "us"]}
    assert props["zones"]["items"]["enum"] == ["a", "b", "c"]
    assert props["labels"] == {}
    assert props["token"] == {"type": "string", "writeOnly": True}
    assert set(props) == {p.name for p in META.params}
