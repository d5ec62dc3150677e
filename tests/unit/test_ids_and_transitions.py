from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from karma.envelope import Transition, TransitionAttrs
from karma.errors import ValidationError
from karma.ids import (
    action_id_for_key,
    action_id_from_workflow_id,
    event_id_for,
    new_action_id,
    workflow_id_for,
)
from karma.lifecycle import ActionState, EventType, TopicKind
from karma.request import ActionRequest
from karma.run_state import RunState
from karma.transitions import TransitionLog

T0 = datetime(2025, 8, 10, 16, 42, 0, 123456, tzinfo=UTC)


def test_action_id_is_derived_from_the_idempotency_key() -> None:
    key = "act:restart:job:abc123:1691685720"
    assert action_id_for_key(key) == action_id_for_key(key)
    assert action_id_for_key(key) != action_id_for_key(key + "x")
    assert ActionRequest.new("log", idempotency_key=key).action_id == action_id_for_key(key)
    # A tenant's keys are its own.
    assert action_id_for_key(key, "a") not in {action_id_for_key(key), action_id_for_key(key, "b")}
    assert ActionRequest.new("log", idempotency_key=key, tenant="a").action_id == action_id_for_key(
        key, "a"
    )
    assert new_action_id() != new_action_id()
    with pytest.raises(ValueError, match="must not be empty"):
        action_id_for_key("")


def test_workflow_and_event_ids() -> None:
    assert action_id_from_workflow_id(workflow_id_for("act_1")) == "act_1"
    assert event_id_for("act_1", 3) == "act_1:3"
    with pytest.raises(ValueError, match="not a Karma action"):
        action_id_from_workflow_id("other-1")


def test_event_types_map_to_states_and_topics() -> None:
    assert EventType.RETRYING.state is ActionState.RETRYING
    assert EventType.PROGRESS.state is None
    assert EventType.REQUESTED.topic_kind is TopicKind.REQUESTED
    assert EventType.STARTED.topic_kind is TopicKind.PROGRESS
    assert EventType.TIMED_OUT.topic_kind is TopicKind.RESULT


def test_log_numbers_transitions_and_tracks_acknowledgements() -> None:
    request = ActionRequest.new("log", {"message": "hi"}, tenant="foo", entity_id="job:1")
    run = RunState()
    log = TransitionLog(request, run)
    for i, event_type in enumerate([EventType.REQUESTED, EventType.ACCEPTED, EventType.STARTED]):
        log.record(event_type, T0 + timedelta(seconds=i), TransitionAttrs())
    assert [e.seq for e in log.transitions] == [1, 2, 3]
    assert log.transitions[0].event_id == f"{request.action_id}:1"
    assert log.transitions[0].tags == {"action": "log", "priority": "normal", "tenant": "foo"}
    assert log.state is ActionState.STARTED
    log.acknowledge(2)
    assert [e.seq for e in log.pending()] == [3]
    log.acknowledge(1)  # acknowledgements never go backwards
    assert run.emitted_seq == 2
    log.acknowledge(99)  # nor beyond what was recorded
    assert run.emitted_seq == 3
    log.record(EventType.SUCCEEDED, T0, TransitionAttrs(outputs={"logged": "hi"}))
    with pytest.raises(RuntimeError, match="already SUCCEEDED"):
        log.record(EventType.FAILED, T0, TransitionAttrs())
    assert (run.state, run.emitted_seq, len(run.transitions)) == (ActionState.SUCCEEDED, 3, 4)


def test_a_continued_run_starts_from_its_predecessor_and_old_inputs_still_load() -> None:
    """The state continue-as-new carries is the whole RunState; what an earlier version
    carried (`Resume`: `recent`, no `emitted_seq`) loads into it."""
    old = {
        "last_seq": 7,
        "state": "STARTED",
        "started_at": "2025-08-10T16:42:00Z",
        "attempt": 1,
        "iterations": 3,
        "data": {"n": 3},
        "data_version": 1,
        "outputs": {"count": 3},
        "recent": [
            {"ts": "2025-08-10T16:42:00Z", "event_type": "action.progress", "action_id": "a",
             "seq": 7}
        ],
    }  # fmt: skip
    run = RunState.model_validate(old)
    assert (run.last_seq, run.emitted_seq, [e.seq for e in run.transitions]) == (7, 7, [7])
    request = ActionRequest.new("log", {"message": "hi"})
    log = TransitionLog(request, run)
    log.record(EventType.PROGRESS, T0, TransitionAttrs())
    assert [e.seq for e in log.pending()] == [8]
    following = run.continued()
    assert (following.last_seq, following.emitted_seq) == (8, 8)
    assert [e.seq for e in following.transitions] == [8]
    assert (following.iterations, following.data) == (3, {"n": 3})


def test_envelope_serialises_utc_milliseconds_and_checks_event_id() -> None:
    event = Transition(ts=T0, event_type=EventType.STARTED, action_id="act_1", seq=3)
    data = event.model_dump(mode="json")
    assert data["ts"] == "2025-08-10T16:42:00.123Z"
    assert data["event_id"] == "act_1:3"
    assert Transition.model_validate_json(event.model_dump_json()) == event
    with pytest.raises(ValueError, match="must be 'act_1:3'"):
        Transition(ts=T0, event_type="action.started", action_id="act_1", seq=3, event_id="x")
    with pytest.raises(ValueError, match="timezone"):
        Transition(ts=datetime(2025, 1, 1), event_type="action.started", action_id="a", seq=1)  # noqa: DTZ001


def test_reserved_tags_and_nul_in_keys_are_refused_naming_the_field() -> None:
    """Tags Karma stamps cannot come from a request (a `tenant` tag would claim a tenant the
    request is not for), and a NUL could make one tenant's key another's."""
    with pytest.raises(ValidationError) as refused:
        ActionRequest.new("log", tags={"tenant": "acme", "priority": "high", "team": "x"})
    assert [e.field for e in refused.value.errors] == ["tags.priority", "tags.tenant"]
    with pytest.raises(ValidationError) as refused:
        ActionRequest.new("log", idempotency_key="acme\x00restart", tenant="a\x00b")
    assert [e.field for e in refused.value.errors] == ["idempotency_key", "tenant"]
