"""The hostile-input campaign: over a thousand generated messages of every bad kind on
`actions.requested` and `actions.events`, interleaved with valid requests and callbacks,
against the real stack. Afterwards every process is alive, every valid request ended,
every bad message is in the DLQ exactly once with a reason naming its problem and its
original bytes, no consumer group lags, and the ledger holds each transition once."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bridge.consumer_loop import group_lag
from karma.ids import action_id_for_key
from karma.lifecycle import ActionState
from tests.conftest import unique
from tests.support.checks import assert_in_ledger_once
from tests.support.kafka import dead_letters_at, produce_each
from tests.support.messages import envelope, request, status_of
from tests.support.waiting import waiting_jobs
from workers.embedded import EmbeddedKarma

HOSTILE = 1000
VALID_REQUESTS = 60
JOBS = 10
SIZE_LIMIT = 1_048_576  # KARMA_LIMITS__MAX_MESSAGE_BYTES, default
REQUESTED, EVENTS = "requested", "events"


@dataclass(frozen=True)
class Hostile:
    kind: str
    target: str  # REQUESTED or EVENTS
    raw: bytes
    reason: str  # a regex the dead letter's reason must match


def base(target: str, ended: str) -> dict[str, Any]:
    """A well-formed message: a request, or a callback for an action that has ended."""
    now = datetime.now(UTC).isoformat()
    if target == REQUESTED:
        return {
            "ts": now,
            "event_type": "action.requested",
            "source": {"system": "campaign"},
            "idempotency_key": unique("campaign"),
            "attrs": {"command": "log", "args": {"message": "hostile"}},
        }
    return {"ts": now, "event_type": "done", "action_id": ended, "source": {"system": "campaign"}}


def dumps(data: Any) -> bytes:
    return json.dumps(data).encode()


WRONG_TYPES: dict[str, list[Any]] = {
    "ts": ["yesterday", [], {}, "2026-13-45T99:00:00Z"],
    "event_type": [5, [], {"a": 1}, None],
    "action_id": [5, [], {}],
    "seq": ["x", -1, [], 1.5],
    "entity_id": [5, [], {}],
    "correlation_id": [True, [1]],
    "idempotency_key": [{}, 3.5],
    "source": ["system", 5, {"system": 5}],
    "tags": [[1], {"a": 1}, "t"],
    "attrs": [[1], "x", 5],
}
REQUEST_ATTRS: dict[str, list[Any]] = {
    "command": [5, None, [], ""],
    "args": [[1], "x", 5],
    "ttl_sec": ["soon", -1, 0, 1e308, [1]],
}


def hostile_messages(ended: str) -> st.SearchStrategy[Hostile]:
    target = st.sampled_from([REQUESTED, EVENTS])

    @st.composite
    def random_bytes(draw: st.DrawFn) -> Hostile:
        raw = draw(st.binary(max_size=400))
        return Hostile("random bytes", draw(target), raw, r".")

    @st.composite
    def not_utf8(draw: st.DrawFn) -> Hostile:
        where = draw(target)
        text = json.dumps(
            {**base(where, ended), "note": draw(st.text(min_size=1))}, ensure_ascii=False
        )
        encoding = draw(st.sampled_from(["latin-1", "utf-16", "utf-16-le", "utf-32", "cp1252"]))
        if encoding in ("latin-1", "cp1252"):
            # é then an ASCII letter: never a UTF-8 sequence, whatever follows.
            text = text.replace('"note": "', '"note": "\u00e9x')
        raw = text.encode(encoding, "replace")
        return Hostile(f"not UTF-8 ({encoding})", where, raw, r"not UTF-8|byte order mark|NUL")

    @st.composite
    def truncated(draw: st.DrawFn) -> Hostile:
        where = draw(target)
        raw = json.dumps(
            {**base(where, ended), "note": draw(st.text())}, ensure_ascii=False
        ).encode()
        cut = draw(st.integers(min_value=0, max_value=len(raw) - 1))
        return Hostile("truncated", where, raw[:cut], r"not JSON|not UTF-8")

    @st.composite
    def scalars(draw: st.DrawFn) -> Hostile:
        value = draw(
            st.one_of(
                st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(),
                st.booleans(), st.none(), st.lists(st.integers(), max_size=5),
            )
        )  # fmt: skip
        return Hostile("scalar or array", draw(target), dumps(value), r"expected a JSON object")

    @st.composite
    def nested(draw: st.DrawFn) -> Hostile:
        depth = draw(st.one_of(st.integers(1, 100), st.integers(100, 100_000)))
        if draw(st.booleans()):
            raw = b"[" * depth + b"]" * depth
            reason = r"nested more than 64" if depth > 64 else r"expected a JSON object"
        else:
            raw = b'{"a":' * depth + b"1" + b"}" * depth
            reason = r"nested more than 64" if depth > 64 else r"ts: Field required"
        return Hostile("deep nesting", draw(target), raw, reason)

    @st.composite
    def megabytes(draw: st.DrawFn) -> Hostile:
        where = draw(target)
        size = draw(st.integers(400_000, 2_000_000))
        data = base(where, ended)
        if where == REQUESTED:
            data["attrs"]["args"]["message"] = "m" * size
        else:
            data["attrs"] = {"blob": "b" * size}
        raw = dumps(data)
        if len(raw) > SIZE_LIMIT:
            reason = r"over the limit of 1,048,576 \(KARMA_LIMITS__MAX_MESSAGE_BYTES\)"
        else:
            reason = r"params\.message: [\d,]+ bytes" if where == REQUESTED else r"\(event\)"
        return Hostile("megabyte string", where, raw, reason)

    @st.composite
    def wrong_type(draw: st.DrawFn) -> Hostile:
        where = draw(target)
        data = base(where, ended)
        if where == REQUESTED and draw(st.booleans()):
            field = draw(st.sampled_from(sorted(REQUEST_ATTRS)))
            data["attrs"][field] = draw(st.sampled_from(REQUEST_ATTRS[field]))
            return Hostile("wrong type", where, dumps(data), rf"attrs\.{field}|action_type")
        field = draw(st.sampled_from(sorted(WRONG_TYPES)))
        data[field] = draw(st.sampled_from(WRONG_TYPES[field]))
        data["note"] = draw(st.text(max_size=20))  # more than a handful of distinct examples
        return Hostile("wrong type", where, dumps(data), rf"{field}")

    @st.composite
    def overflowing(draw: st.DrawFn) -> Hostile:
        where = draw(target)
        raw = dumps(base(where, ended))
        literal, reason = draw(
            st.sampled_from(
                [
                    (b"1e999", r"too large for a 64-bit float"),
                    (b"-1e400", r"too large for a 64-bit float"),
                    (b"9" * 5000, r"4300 digits"),
                    (b"NaN", r"NaN is not valid JSON"),
                    (b"Infinity", r"Infinity is not valid JSON"),
                    (b"-Infinity", r"Infinity is not valid JSON"),
                ]
            )
        )
        raw = raw[:-1] + b', "n": ' + literal + b"}"
        return Hostile("overflow, NaN, Infinity", where, raw, reason)

    @st.composite
    def seq_overflow(draw: st.DrawFn) -> Hostile:
        where = draw(target)
        data = {**base(where, ended), "seq": draw(st.integers(min_value=2**32))}
        return Hostile("overflowing seq", where, dumps(data), r"seq")

    @st.composite
    def control_chars(draw: st.DrawFn) -> Hostile:
        where = draw(target)
        char = draw(st.integers(0, 31)).to_bytes(1, "big")
        raw = dumps({**base(where, ended), "entity_id": "a__b"}).replace(
            b"a__b", b"a" + char + b"b"
        )
        return Hostile("control character", where, raw, r"Invalid control character|NUL")

    @st.composite
    def long_ids(draw: st.DrawFn) -> Hostile:
        where = draw(target)
        data = {**base(where, ended), "correlation_id": draw(st.text(max_size=20))}
        field = draw(st.sampled_from(["idempotency_key", "entity_id", "correlation_id", "ext"]))
        if field == "ext" and where == REQUESTED:
            field = "entity_id"  # an external id means nothing in a request
        if field == "ext":
            data.pop("action_id", None)
            data["attrs"] = {**data.get("attrs", {}), "external_workflow_id": "x" * 10_000}
            reason = r"external_workflow_id: must be at most 512"
        else:
            data[field] = "i" * 10_000
            reason = rf"{field}: String should have at most 512"
        return Hostile("10,000-character id", where, dumps(data), reason)

    @st.composite
    def unknown_command(draw: st.DrawFn) -> Hostile:
        data = base(REQUESTED, ended)
        data["attrs"]["command"] = "no.such." + draw(st.text(min_size=1, max_size=20))
        return Hostile("unknown command", REQUESTED, dumps(data), r"unknown action")

    @st.composite
    def unknown_or_ended(draw: st.DrawFn) -> Hostile:
        data = {**base(EVENTS, ended), "event_type": draw(st.text(min_size=1, max_size=30))}
        if draw(st.booleans()):
            data["action_id"] = unique("act_nobody")
            return Hostile("unknown action", EVENTS, dumps(data), r"which does not exist")
        return Hostile("ended action", EVENTS, dumps(data), r"which has ended")

    return st.one_of(
        random_bytes(), not_utf8(), truncated(), scalars(), nested(), megabytes(),
        wrong_type(), overflowing(), seq_overflow(), control_chars(), long_ids(),
        unknown_command(), unknown_or_ended(),
    )  # fmt: skip


def generate(ended: str) -> list[Hostile]:
    """Draw the campaign's messages with Hypothesis (generation only: the stack is the
    system under test, one run of it)."""
    drawn: list[Hostile] = []

    @settings(
        max_examples=HOSTILE + HOSTILE // 5,  # a few megabyte ones are set aside
        phases=[Phase.explicit, Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(hostile_messages(ended))
    def draw(message: Hostile) -> None:
        drawn.append(message)

    draw()
    megabyte = [m for m in drawn if m.kind == "megabyte string"][:6]  # keep the DLQ readable
    return [m for m in drawn if m.kind != "megabyte string"] + megabyte


async def lagging(karma: EmbeddedKarma, groups: dict[str, list[str]]) -> dict[str, int]:
    kafka = karma.settings.kafka
    lags = {group: await group_lag(kafka, group, topics) for group, topics in groups.items()}
    return {group: lag for group, lag in lags.items() if lag}


async def test_a_thousand_hostile_messages_change_nothing_for_the_valid_ones(
    karma: EmbeddedKarma, report: Callable[[str], None]
) -> None:
    kafka = karma.settings.kafka
    topic = {REQUESTED: kafka.topics.requested, EVENTS: kafka.topics.callbacks}
    done = await karma.client.request("log", {"message": "ended before the campaign"})
    await asyncio.wait_for(done.result(), 60)
    hostile = generate(done.action_id)
    assert len(hostile) >= HOSTILE

    externals, jobs = await waiting_jobs(karma, JOBS, prefix="campaign-job", wait_seconds=300)
    keys = [unique("campaign-valid") for _ in range(VALID_REQUESTS)]
    valid: list[tuple[str, bytes | None]] = [
        (topic[REQUESTED], request("log", {"message": k}, idempotency_key=k)) for k in keys
    ]
    for index, external in enumerate(externals):
        attrs = {"external_workflow_id": external}
        valid.append((topic[EVENTS], envelope("step", attrs={**attrs, "percent": 50})))
        valid.append((topic[EVENTS], envelope("done", attrs={**attrs, "answer": index})))
    # Interleave: a valid message after every ~14 hostile ones, in order.
    messages: list[tuple[str, bytes | None]] = []
    every = max(1, len(hostile) // len(valid))
    pending = list(valid)
    for index, bad in enumerate(hostile):
        messages.append((topic[bad.target], bad.raw))
        if index % every == every - 1 and pending:
            messages.append(pending.pop(0))
    messages += pending
    positions = await produce_each(kafka, messages)
    hostile_at = {
        p: m for p, m in zip(positions[: len(messages)], messages, strict=True) if m not in valid
    }
    by_raw = {(topic[h.target], h.raw): h for h in hostile}

    # Every valid request ran; every job got its callbacks in order.
    statuses = [await status_of(karma, action_id_for_key(k), timeout=120) for k in keys]
    assert {s.state for s in statuses} == {ActionState.SUCCEEDED}
    for index, job in enumerate(jobs):
        outcome = await asyncio.wait_for(job.result(), 120)
        assert (outcome.state, outcome.outputs["answer"]) == (ActionState.SUCCEEDED, index)
    statuses += [await job.status() for job in jobs]

    # Every bad message is in the DLQ once, with its reason and its bytes.
    letters = await dead_letters_at(kafka, hostile_at, timeout=120)
    missing = [(p, by_raw[m].kind, m[1][:300]) for p, m in hostile_at.items() if not letters[p]]
    assert not missing, (len(missing), missing[:5])
    kinds: Counter[str] = Counter()
    for position, (where, raw) in hostile_at.items():
        bad = by_raw[(where, raw)]
        found = letters[position]
        assert len(found) == 1, (bad.kind, raw[:200], [f.reason for f in found])
        letter = found[0]
        assert re.search(bad.reason, letter.reason), (
            bad.kind,
            bad.reason,
            letter.reason,
            raw[:200],
        )
        if letter.truncated_from is None:
            assert letter.value == raw
        else:
            assert (letter.truncated_from, raw.startswith(letter.value or b"")) == (len(raw), True)
        kinds[bad.kind] += 1

    # Nothing stopped, nothing lags, the ledger holds every transition once.
    assert karma.bridge is not None and karma.worker is not None
    waiting = asyncio.ensure_future(asyncio.gather(karma.bridge.wait(), karma.worker.wait()))
    finished, _ = await asyncio.wait({waiting}, timeout=0.5)
    assert not finished, "a consumer or the worker stopped"
    waiting.cancel()
    groups = {
        karma.settings.bridge.consumer_group: [
            kafka.topics.requested, kafka.topics.progress, kafka.topics.result
        ],
        karma.settings.ingress.requests_group: [kafka.topics.requested],
        karma.settings.ingress.callbacks_group: [kafka.topics.callbacks],
    }  # fmt: skip
    async with asyncio.timeout(60):
        while await lagging(karma, groups):  # noqa: ASYNC110 - polling the broker
            await asyncio.sleep(0.5)
    await assert_in_ledger_once(karma, statuses)
    report(
        f"{len(hostile_at)} hostile messages dead-lettered exactly once "
        f"({', '.join(f'{k}: {n}' for k, n in sorted(kinds.items()))}); "
        f"{VALID_REQUESTS} valid requests and {JOBS} jobs ({2 * JOBS} callbacks) ended "
        "SUCCEEDED; consumer lag 0; ledger exactly once"
    )
