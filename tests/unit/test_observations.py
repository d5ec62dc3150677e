"""Observations: the envelope of transitions without an action, the process convention
checked (step, status, duration), ids derived from content when missing, and every kind of
bad bytes refused with a reason."""

from __future__ import annotations

import json

import pytest

from karma.errors import ValidationError
from karma.observations import decode_observation, event_id_for, observation

GOOD = {
    "ts": "2026-11-25T10:00:00Z",
    "event_type": "deploy.step",
    "entity_id": "svc:web",
    "correlation_id": "run-1",
    "attrs": {"step": "build", "duration_ms": 1234.5, "status": "ok"},
}


def raw(document: object) -> bytes:
    return json.dumps(document).encode()


def test_an_observation_gets_an_id_from_its_content_when_it_has_none() -> None:
    seen = decode_observation(raw(GOOD))
    assert seen.event_id == event_id_for(GOOD)
    assert seen.event_id == decode_observation(raw(dict(reversed(GOOD.items())))).event_id
    assert decode_observation(raw({**GOOD, "event_id": "e-1"})).event_id == "e-1"
    assert seen.ts.isoformat() == "2026-11-25T10:00:00+00:00"


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({**GOOD, "ts": "2026-11-25T10:00:00"}, "ts"),
        ({k: v for k, v in GOOD.items() if k != "ts"}, "ts"),
        ({k: v for k, v in GOOD.items() if k != "event_type"}, "event_type"),
        ({**GOOD, "event_type": ""}, "event_type"),
        ({**GOOD, "action_id": "act_1"}, "action_id"),
        ({**GOOD, "seq": 3}, "seq"),
        ({**GOOD, "attrs": {"duration_ms": -1}}, "attrs.duration_ms"),
        ({**GOOD, "attrs": {"duration_ms": "12"}}, "attrs.duration_ms"),
        ({**GOOD, "attrs": {"duration_ms": True}}, "attrs.duration_ms"),
        ({**GOOD, "attrs": {"step": 3}}, "attrs.step"),
        ({**GOOD, "attrs": {"status": ["ok"]}}, "attrs.status"),
    ],
)
def test_what_cannot_be_used_is_refused_naming_the_field(document: object, field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        decode_observation(raw(document))
    assert field in [e.field for e in refused.value.errors], refused.value.errors


@pytest.mark.parametrize("value", [b"", b"not json", b"[1, 2]", b"\xff\xfe", b"{" * 5000, None])
def test_bad_bytes_are_refused_not_raised_otherwise(value: bytes | None) -> None:
    with pytest.raises(ValidationError):
        decode_observation(value)


def test_the_entropy_layers_step_markers_are_reserved() -> None:
    for step in ("$end", "$start", "$anything"):
        with pytest.raises(ValidationError) as caught:
            observation({"ts": "2026-11-25T10:00:00Z", "event_type": "x", "attrs": {"step": step}})
        assert caught.value.errors[0].field == "attrs.step"
