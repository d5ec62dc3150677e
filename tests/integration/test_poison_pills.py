"""No message stops the bridge: whatever one message holds, it ends in the DLQ once, with
the reason and its original bytes, and the valid requests around it all run."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from types import SimpleNamespace

from bridge.dlq import DeadLetterPublisher
from bridge.ledger_schema import INSERT_COLUMNS, KafkaPosition, ledger_row
from bridge.sink import LedgerSink
from karma.envelope import Transition
from karma.ids import action_id_for_key
from karma.lifecycle import ActionState, EventType
from tests.conftest import unique
from tests.support.kafka import dead_letters_at, produce_each
from tests.support.messages import request, status_of
from workers.embedded import EmbeddedKarma


def transition(**overrides: object) -> bytes:
    event = {
        "ts": datetime.now(UTC).isoformat(),
        "event_type": "action.started",
        "action_id": unique("act"),
        "seq": 3,
        "source": {"system": "karma"},
        "attrs": {"attempt": 1},
    }
    return json.dumps({**event, **overrides}).encode()


def hostile(marker: str) -> dict[bytes, str]:
    """Message -> what its dead letter's reason must say."""
    deep = b"[" * 100_000 + b"]" * 100_000
    return {
        deep: "nested more than 64 levels",
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000: "nested more than 64 levels",
        b"x" * 3_000_000: "3,000,000 bytes, over the limit",
        f'{{"m": "{marker}", "bad": "\xff'.encode("latin-1") + b'"}': "not UTF-8",
        json.dumps({"m": marker}).encode("utf-16"): "byte order mark",
        f'{{"m": "{marker}", "n": NaN}}'.encode(): "NaN is not valid JSON",
        f'{{"m": "{marker}", "n": 1e999}}'.encode(): "too large for a 64-bit float",
        f'{{"m": "{marker}", "n": {"7" * 5000}}}'.encode(): "4300 digits",
        f'{{"m": "{marker}", "s": "\\udc00"}}'.encode(): "lone UTF-16 surrogate",
        transition(attrs={"attempt": 70_000}, entity_id=marker): "attrs.attempt",
        transition(attrs={"attempt": "three"}, entity_id=marker): "attrs.attempt",
        transition(seq=2**33, entity_id=marker): "seq: Input should be less than",
        transition(ts="2400-01-01T00:00:00Z", entity_id=marker): "ts: Value error",
        transition(entity_id=marker * 100): "entity_id: String should have at most 512",
    }


async def test_hostile_messages_on_every_topic_are_dead_lettered_and_the_rest_runs(
    karma: EmbeddedKarma,
) -> None:
    kafka = karma.settings.kafka
    topics = kafka.topics
    marker = unique("poison")
    bad = hostile(marker)
    keys = [unique("valid") for _ in range(6)]
    messages: list[tuple[str, bytes | None]] = []
    for topic in (topics.progress, topics.result, topics.requested, topics.callbacks):
        messages += [(topic, value) for value in bad]
        messages.append(
            (topics.requested, request("log", {"message": marker}, idempotency_key=keys.pop()))
        )
    positions = await produce_each(kafka, messages, key=marker.encode())
    valid = {p for p, (topic, value) in zip(positions, messages, strict=True) if value not in bad}
    hostile_positions = [p for p in positions if p not in valid]

    # Every valid request interleaved with the hostile ones ran.
    for position, (_, value) in zip(positions, messages, strict=True):
        if position in valid:
            key = json.loads(value or b"")["idempotency_key"]
            status = await status_of(karma, action_id_for_key(key))
            assert status.state is ActionState.SUCCEEDED

    letters = await dead_letters_at(kafka, hostile_positions)
    by_position = dict(zip(positions, messages, strict=True))
    for position in hostile_positions:
        found = letters[position]
        original = by_position[position][1] or b""
        assert len(found) == 1, (position, [f.reason for f in found])  # exactly once
        letter = found[0]
        expected = bad[original]
        if position[0] == topics.callbacks and expected == "attrs.attempt":
            # A well-formed envelope as a callback: the action it names does not exist.
            expected = "which does not exist"
        if position[0] == topics.requested and b'"system": "karma"' in original:
            # Without Karma's header, a "transition" on the request topic is forged.
            expected = "lacks the karma-transition header"
        assert expected in letter.reason, (expected, letter.reason)
        if letter.truncated_from is None:
            assert letter.value == original
        else:  # larger than the DLQ keeps: its start and its size
            assert letter.truncated_from == len(original)
            assert original.startswith(letter.value or b"")
        assert letter.key == marker.encode()
    # The bridge's consumers are all still running.
    assert karma.bridge is not None
    for part in (karma.bridge.requests, karma.bridge.callbacks):
        assert part is not None and part.in_flight >= 0
    wait = asyncio.ensure_future(karma.bridge.wait())
    done, _ = await asyncio.wait({wait}, timeout=0.5)
    assert not done, "a bridge consumer stopped"
    wait.cancel()


async def test_a_row_clickhouse_cannot_take_is_found_and_dead_lettered_alone(
    karma: EmbeddedKarma,
) -> None:
    """Values the envelope cannot stop but the client cannot serialise (here: an
    attempt past UInt16, forced past the row checks) are isolated by halving the batch."""
    sink = LedgerSink(karma.settings, DeadLetterPublisher(karma.settings.kafka))
    sink._ledger = karma.ledger  # the session's ledger, through a second connection
    action_id = unique("act")
    entries = []
    for seq in range(1, 8):
        event = Transition(
            ts=datetime.now(UTC), event_type=EventType.PROGRESS, action_id=action_id, seq=seq
        )
        row = ledger_row(event, KafkaPosition("actions.progress", 0, seq))
        if seq == 5:
            row[INSERT_COLUMNS.index("attempt")] = 70_000  # UInt16
        record = SimpleNamespace(
            topic="actions.progress",
            partition=0,
            offset=seq,
            key=None,
            value=b"v",
            headers=[],
            timestamp=0,
        )
        entries.append((record, row))
    refused = await sink._insert(entries)
    assert [(letter.offset, letter.stage) for letter in refused] == [(5, "ledger")]
    assert "ClickHouse cannot store it" in refused[0].reason
    stored = await asyncio.to_thread(karma.ledger.seqs, [action_id])
    assert stored == {action_id: {1, 2, 3, 4, 6, 7}}
