"""What the Temporal Web UI shows of an action: nothing from outside can end its code span
(no links or headings injected), and every text fits Temporal's limits in bytes."""

from __future__ import annotations

from datetime import UTC, datetime

from karma.envelope import Transition
from karma.lifecycle import ActionState, EventType
from karma.request import ActionRequest
from karma.web_ui import DETAILS_BYTES, SUMMARY_BYTES, current_details, details, summary


def test_values_from_outside_stay_inside_their_code_spans() -> None:
    hostile = "x` [approve here](https://evil.example)\n\n# Heading"
    request = ActionRequest.new("log", {"message": "m"}, entity_id=hostile, correlation_id="`")
    text = details(request)
    entity = next(line for line in text.splitlines() if line.startswith("- **entity**"))
    assert entity.count("`") == 2  # one span: the link is text inside it
    assert "\n#" not in text
    assert "m" not in text.split("**parameters**")[1].replace("`message`", "")  # names only
    assert "\n" not in summary(request)


def test_every_text_fits_temporals_limits_in_bytes() -> None:
    request = ActionRequest.new(
        "log", {f"p{i}": 1 for i in range(2000)}, entity_id="é" * 200, tenant="ü" * 100
    )
    assert len(summary(request).encode()) <= SUMMARY_BYTES
    assert len(details(request).encode()) <= DETAILS_BYTES
    summary(request).encode().decode()  # cut between characters, never inside one


def test_current_details_name_the_state_and_quote_free_text() -> None:
    transition = Transition(
        ts=datetime.now(UTC),
        event_type=EventType.RETRYING,
        action_id="act_1",
        seq=4,
        attrs={"attempt": 2, "error": {"type": "transient", "message": "[x](http://e)\n`boom`"}},
    )
    text = current_details(transition, ActionState.RETRYING)
    assert text.startswith("**RETRYING** · action.retrying (#4) · attempt 2 · `transient:")
    assert "\n" not in text
    assert text.count("`") == 2
