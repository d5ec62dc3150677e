from __future__ import annotations

import json

import pytest

from bridge.decode import decode_envelope, decode_foreign_envelope, decode_transition
from karma.errors import ValidationError

TRANSITION = {
    "event_id": "act_1:2",
    "ts": "2025-08-10T16:42:00.123Z",
    "event_type": "action.accepted",
    "action_id": "act_1",
    "seq": 2,
    "source": {"system": "karma"},
}


def test_a_karma_transition_decodes() -> None:
    event = decode_transition(json.dumps(TRANSITION).encode())
    assert event is not None
    assert event.event_id == "act_1:2"


def test_what_claims_to_be_a_transition_without_the_header_is_refused() -> None:
    with pytest.raises(ValidationError, match="lacks the karma-transition header"):
        decode_foreign_envelope(json.dumps(TRANSITION).encode())
    foreign = {**TRANSITION, "source": {"system": "rules-fsm"}}
    envelope = decode_foreign_envelope(json.dumps(foreign).encode())
    assert envelope.source.system == "rules-fsm"


def test_a_request_is_not_a_transition() -> None:
    request = {**TRANSITION, "seq": 0, "event_type": "action.requested", "event_id": ""}
    with pytest.raises(ValidationError, match="seq: Input should be greater than or equal to 1"):
        decode_transition(json.dumps(request).encode())


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [
        (None, "(value)", "message has no value"),
        (b"\xff\xfe", "(value)", "not UTF-8"),
        (b"\x80{}", "(value)", "not UTF-8"),
        (b"[1, 2]", "(value)", "expected a JSON object, got an array"),
        (json.dumps({**TRANSITION, "seq": "x"}).encode(), "seq", "valid integer"),
        (
            json.dumps({**TRANSITION, "event_type": "action.exploded"}).encode(),
            "event_type",
            "Input should be",
        ),
        (
            json.dumps({k: v for k, v in TRANSITION.items() if k != "ts"}).encode(),
            "ts",
            "Field required",
        ),
    ],
)
def test_unusable_messages_get_a_reason_naming_the_field(
    raw: bytes | None, field: str, reason: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        decode_transition(raw)
    assert caught.value.errors[0].field == field
    assert reason in caught.value.errors[0].reason


def test_envelope_accepts_observations() -> None:
    envelope = decode_envelope(
        b'{"ts": "2025-08-10T16:42:00Z", "event_type": "job.started", "entity_id": "job:1"}'
    )
    assert envelope.action_id == ""
    assert envelope.entity_id == "job:1"
