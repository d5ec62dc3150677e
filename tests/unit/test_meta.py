from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError as PydanticValidationError

from karma.meta import ActionMeta, ParamDefinition, ParamType, RetryPolicy


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type": ParamType.SELECT}, "needs options"),
        ({"type": ParamType.STRING, "options": ("a",)}, "options only apply"),
        ({"type": ParamType.STRING, "min": 1}, "min/max only apply to numbers"),
        ({"type": ParamType.NUMBER, "min": 5, "max": 1}, "min is greater than max"),
        ({"type": ParamType.NUMBER, "required": True, "default": 1}, "has no default"),
        ({"type": ParamType.NUMBER, "default": "x"}, "default must be a number"),
        ({"type": ParamType.NUMBER, "default": 0, "min": 1}, "default must be >= 1"),
    ],
)
def test_inconsistent_parameter_definitions_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(PydanticValidationError, match=message):
        ParamDefinition(name="p", **kwargs)


def test_action_meta_rejects_duplicates_and_bad_types() -> None:
    p = ParamDefinition(name="p", type=ParamType.STRING)
    with pytest.raises(PydanticValidationError, match="duplicate parameter 'p'"):
        ActionMeta(type="x", name="X", params=(p, p))
    with pytest.raises(PydanticValidationError, match="type"):
        ActionMeta(type="Not Valid", name="X")
    with pytest.raises(PydanticValidationError, match="timeouts must be positive"):
        ActionMeta(type="x", name="X", timeout=timedelta(0))


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=3,
        maximum_interval=timedelta(seconds=20),
    )
    assert [policy.delay_after(n).total_seconds() for n in (1, 2, 3, 4)] == [1, 3, 9, 20]


def test_retry_intervals_must_be_consistent() -> None:
    with pytest.raises(PydanticValidationError, match="must not exceed maximum_interval"):
        RetryPolicy(initial_interval=timedelta(minutes=5), maximum_interval=timedelta(minutes=1))
    with pytest.raises(PydanticValidationError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def test_meta_round_trips_through_json() -> None:
    meta = ActionMeta(
        type="a.b",
        name="A",
        params=(ParamDefinition(name="k", type=ParamType.SELECT, options=("x", "y")),),
    )
    assert ActionMeta.model_validate_json(meta.model_dump_json()) == meta
    assert meta.secret_params == frozenset()
