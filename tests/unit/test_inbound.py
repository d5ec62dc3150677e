"""Reading requests and callbacks from Kafka messages, and dead letters back from the DLQ."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from bridge.dlq import DeadLetter
from bridge.inbound import ORIGIN_HEADER, Inbound, decode_callback, decode_request
from bridge.topic_reader import Message
from karma.errors import ValidationError
from karma.ids import action_id_for_key

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def inbound(data: Any, *, offset: int = 7, headers: dict[str, bytes] | None = None) -> Inbound:
    value = data if isinstance(data, bytes) else json.dumps(data).encode()
    return Inbound("actions.requested", 1, offset, value, headers or {})


def requested(**fields: Any) -> dict[str, Any]:
    attrs = {"command": "log", "args": {"message": "hi"}, **fields.pop("attrs", {})}
    return {"ts": NOW.isoformat(), "event_type": "action.requested", "attrs": attrs, **fields}


def reason_of(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return str(exc.value)


def test_a_request_becomes_an_action_request() -> None:
    request = decode_request(
        inbound(
            requested(
                idempotency_key="k-1",
                entity_id="job:1",
                correlation_id="slot:1",
                tags={"tenant": "foo", "priority": "high", "team": "sre"},
                source={"system": "rules", "ns": {"rule": "r7"}},
            )
        ),
        NOW,
    )
    assert request is not None
    assert request.action_id == action_id_for_key("k-1", "foo")
    assert request.action_type == "log"
    assert request.params == {"message": "hi"}
    assert (request.tenant, request.priority, request.tags) == ("foo", "high", {"team": "sre"})
    assert request.event_source.ns == {"rule": "r7", "requested_by": "rules"}


def test_without_a_key_the_position_is_the_key_and_a_replay_keeps_it() -> None:
    first = decode_request(inbound(requested(), offset=7), NOW)
    assert first is not None
    assert first.idempotency_key == "kafka:actions.requested:1:7"
    replayed = decode_request(
        inbound(requested(), offset=99, headers={ORIGIN_HEADER: b"kafka:actions.requested:1:7"}),
        NOW,
    )
    assert replayed is not None
    assert replayed.action_id == first.action_id


def test_karmas_own_mirrored_request_starts_nothing_and_a_forged_one_is_refused() -> None:
    mirrored = requested(action_id="act_1", seq=1, source={"system": "karma"})
    marked = {"karma-transition": b"1"}
    assert decode_request(inbound(mirrored, headers=marked), NOW) is None  # not even parsed
    assert decode_request(inbound(b"\xff not even JSON", headers=marked), NOW) is None
    with pytest.raises(ValidationError, match="lacks the karma-transition header"):
        decode_request(inbound(mirrored), NOW)
    # A request Karma's own CLI would publish (seq 0) is a request.
    assert decode_request(inbound(requested(source={"system": "karma"})), NOW) is not None


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"{oops", "(value): not JSON"),
        (b"[1, 2]", "(value): expected a JSON object, got an array"),
        ({"event_type": "action.requested"}, "ts: Field required"),
        (requested(event_type="action.started"), "event_type: must be 'action.requested'"),
        (requested(attrs={"command": ""}), "attrs.command: String should have at least 1"),
        (requested(attrs={"args": [1]}), "attrs.args: Input should be a valid dictionary"),
        (requested(attrs={"ttl_sec": -1}), "attrs.ttl_sec: Input should be greater than 0"),
        (requested(attrs={"ttl_sec": 1e308}), "attrs.ttl_sec: Input should be less than or"),
        (requested(attrs={"ttl_sec": "1e400"}), "attrs.ttl_sec: Input should be a finite"),
        (b'{"attrs": {"ttl_sec": Infinity}}', "Infinity is not valid JSON (line 1 column 23)"),
        ('{"ts": "x"}'.encode("utf-16"), "(value): not UTF-8 JSON"),
        (requested(entity_id="e" * 10_000), "entity_id: String should have at most 512"),
        (requested(idempotency_key="k" * 513), "idempotency_key: String should have at most"),
        (requested(tags={"t" * 300: "v"}), "String should have at most 256 characters"),
        (requested(ts="9999-12-31T23:59:59-05:00"), "ts: Value error, ts is out of range"),
        (requested(ts="0001-01-01T00:00:00Z"), "ts: Value error, ts must be between the years"),
        (requested(attrs={"command": "c" * 300}), "action_type: String should have at most 256"),
    ],
)
def test_unusable_requests_name_the_field(message: Any, reason: str) -> None:
    with pytest.raises(ValidationError) as exc:
        decode_request(inbound(message), NOW)
    assert reason in reason_of(exc)


def test_an_expired_request_is_refused_and_a_fresh_one_is_not() -> None:
    message = requested(attrs={"ttl_sec": 60})
    assert decode_request(inbound(message), NOW + timedelta(seconds=59)) is not None
    with pytest.raises(ValidationError) as exc:
        decode_request(inbound(message), NOW + timedelta(seconds=61))
    assert "attrs.ttl_sec: expired" in reason_of(exc)


def test_a_callback_with_an_overlong_external_id_is_refused() -> None:
    attrs = {"external_workflow_id": "x" * 513}
    with pytest.raises(ValidationError) as exc:
        decode_callback(inbound({"ts": NOW.isoformat(), "event_type": "x", "attrs": attrs}))
    assert "attrs.external_workflow_id: must be at most 512 characters, got 513" in str(exc.value)


def test_a_header_without_a_value_is_read_as_empty() -> None:
    record = SimpleNamespace(
        topic="t",
        partition=0,
        offset=1,
        value=b"{}",
        timestamp=5,
        headers=[("karma.origin", None), ("other", b"x")],
    )
    assert Inbound.from_record(record).headers == {"karma.origin": b"", "other": b"x"}


def test_a_callback_names_its_action_or_its_external_id() -> None:
    by_id = decode_callback(inbound({"ts": NOW.isoformat(), "event_type": "x", "action_id": "a"}))
    assert (by_id.action_id, by_id.external_workflow_id) == ("a", "")
    assert by_id.event.event_id == "kafka:actions.requested:1:7"  # redeliveries dedupe on it
    by_external = decode_callback(
        inbound(
            {
                "ts": NOW.isoformat(),
                "event_type": "x",
                "event_id": "job-1:3",
                "attrs": {"external_workflow_id": "job-1"},
            }
        )
    )
    assert (by_external.action_id, by_external.external_workflow_id) == ("", "job-1")
    assert by_external.event.event_id == "job-1:3"
    assert by_external.target == "external id 'job-1'"


@pytest.mark.parametrize(
    ("attrs", "reason"),
    [
        ({}, "action_id: the event names neither its action nor attrs.external_workflow_id"),
        ({"external_workflow_id": 12}, "attrs.external_workflow_id: must be a string, got int"),
    ],
)
def test_a_callback_without_a_target_is_unusable(attrs: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError) as exc:
        decode_callback(inbound({"ts": NOW.isoformat(), "event_type": "x", "attrs": attrs}))
    assert reason in reason_of(exc)


def test_a_dead_letter_reads_back_from_its_headers() -> None:
    letter = DeadLetter(
        reason="r",
        stage="ingress.events",
        topic="actions.events",
        partition=2,
        offset=40,
        origin="kafka:actions.events:2:40",
        key=b"k",
        value=b"\xff raw",
    )
    message = Message("actions.dlq", 0, 5, b"k", b"\xff raw", {k: v for k, v in letter.headers()})
    back = DeadLetter.from_message(message)
    assert back.model_dump(exclude={"ts", "position"}) == letter.model_dump(
        exclude={"ts", "position"}
    )
    assert back.position == "0:5"
    assert back.ts


def test_a_dead_letter_with_foreign_headers_still_reads_back() -> None:
    headers = {"karma.dlq.partition": b"two", "karma.dlq.offset": b"\xff", "karma.dlq.reason": b""}
    back = DeadLetter.from_message(Message("actions.dlq", 0, 9, None, b"v", headers))
    assert (back.partition, back.offset, back.truncated_from) == (-1, -1, None)


def test_a_truncated_dead_letter_says_so_and_keeps_its_reason_short() -> None:
    letter = DeadLetter(
        reason="r" * 5000, stage="ledger", topic="t", partition=0, offset=1, value=b"x" * 100
    )
    short = letter.truncated(10)
    headers = dict(short.headers())
    assert short.value == b"x" * 10
    assert headers["karma.dlq.truncated-from"] == b"100"
    assert len(headers["karma.dlq.reason"]) < 2100
    assert headers["karma.dlq.reason"].endswith(b"(5,000 characters)")
    back = DeadLetter.from_message(Message("actions.dlq", 0, 3, None, short.value, headers))
    assert back.truncated_from == 100
