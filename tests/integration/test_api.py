"""The HTTP API on the real stack (the embedded stack serves it): requests, idempotency,
problem documents, status, listings, decisions, cancellation, the registry, the ledger, and
Server-Sent Events resumed with Last-Event-ID."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from karma import names
from karma.api.app import ApiServices
from karma.api.hub import TransitionHub
from karma.api.keys import Scope
from karma.api.server import ApiServer
from karma.embedded.process import free_port
from karma.errors import ValidationError
from karma.ids import workflow_id_for
from karma.lifecycle import ActionState
from karma.request import ActionRequest
from tests.conftest import unique
from tests.support.api import admin_key, bearer, new_key, until_state
from tests.support.kafka import dead_letters_at, produce_each
from workers.embedded import EmbeddedKarma

PROBLEM = "application/problem+json"


@pytest.fixture
async def api(karma: EmbeddedKarma) -> AsyncIterator[httpx.AsyncClient]:
    assert karma.api is not None, "the embedded stack serves the API"
    headers = bearer(admin_key(karma))
    async with httpx.AsyncClient(base_url=karma.api.url, timeout=30, headers=headers) as client:
        yield client


async def sse_events(
    api: httpx.AsyncClient, action_id: str, last_event_id: str | None = None, key: str = ""
) -> list[dict[str, Any]]:
    """Every event of the stream until the server ends it."""
    headers = {"Accept": "text/event-stream", **(bearer(key) if key else {})}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async with api.stream("GET", f"/v1/actions/{action_id}/transitions", headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            if not line:
                if "data" in current:
                    events.append(current)
                current = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                current[name] = value.removeprefix(" ")
    return events


async def test_health_and_readiness_name_each_dependency(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    ready = await api.get("/readyz")
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert set(checks) == {"temporal", "kafka", "clickhouse"}
    assert all(c["ok"] for c in checks.values()), checks


async def test_a_request_runs_once_per_idempotency_key(api: httpx.AsyncClient) -> None:
    key = unique("api-key")
    body = {"type": "log", "params": {"message": "from the API"}, "idempotency_key": key}
    first = await api.post("/v1/actions", json=body)
    assert first.status_code == 202, first.text
    action_id = first.json()["action_id"]
    assert first.headers["location"] == f"/v1/actions/{action_id}"
    assert first.json()["links"]["transitions"] == f"/v1/actions/{action_id}/transitions"
    again = await api.post("/v1/actions", json=body)
    assert again.status_code == 200
    assert again.json()["action_id"] == action_id and again.json()["created"] is False
    by_header = await api.post(
        "/v1/actions",
        json={"type": "log", "params": {"message": "from the API"}},
        headers={"Idempotency-Key": key},
    )
    assert (by_header.status_code, by_header.json()["action_id"]) == (200, action_id)
    done = await until_state(api, action_id, "SUCCEEDED")
    assert done["outputs"] == {"logged": "from the API"}
    assert [t["seq"] for t in done["transitions"]] == list(range(1, len(done["transitions"]) + 1))


async def test_bad_requests_are_problems_naming_each_field(
    api: httpx.AsyncClient, karma: EmbeddedKarma
) -> None:
    cases: list[tuple[dict[str, Any], dict[str, str], str]] = [
        ({"params": {}}, {}, "type"),
        ({"type": "log", "params": {}}, {}, "params.message"),
        ({"type": "no.such.action"}, {}, "action_type"),
        ({"type": "delay", "params": {"seconds": -1}}, {}, "params.seconds"),
        ({"type": "log", "params": {"message": "x"}, "idempotency_key": "a"},
         {"Idempotency-Key": "b"}, "idempotency_key"),
        ({"type": "log", "params": {"message": "x"}, "entity_id": "e" * 600}, {}, "entity_id"),
    ]  # fmt: skip
    for body, headers, field in cases:
        answer = await api.post("/v1/actions", json=body, headers=headers)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.headers["content-type"] == PROBLEM
        problem = answer.json()
        assert problem["status"] == 422 and problem["title"]
        assert field in [e["field"] for e in problem["errors"]], (field, problem)
    # The same reasons as the SDK and the CLI give.
    with pytest.raises(ValidationError) as raised:
        await karma.client.request("delay", {"seconds": -1})
    answer = await api.post("/v1/actions", json={"type": "delay", "params": {"seconds": -1}})
    assert answer.json()["detail"] == str(raised.value)
    not_json = await api.post(
        "/v1/actions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert (not_json.status_code, not_json.headers["content-type"]) == (422, PROBLEM)


async def test_unknown_ids_and_types_are_404_problems(api: httpx.AsyncClient) -> None:
    for path in (
        "/v1/actions/act_nosuchaction",
        "/v1/actions/act_nosuchaction/transitions",
        "/v1/action-types/no.such.type",
    ):
        answer = await api.get(path)
        assert (answer.status_code, answer.headers["content-type"]) == (404, PROBLEM), path
    stream = await api.get(
        "/v1/actions/act_nosuchaction/transitions", headers={"Accept": "text/event-stream"}
    )
    assert stream.status_code == 404
    for verb in ("cancel", "decision", "callbacks"):
        body = {"decision": "approve", "by": "x"} if verb == "decision" else {"event_type": "x"}
        answer = await api.post(f"/v1/actions/act_nosuchaction/{verb}", json=body)
        assert answer.status_code == 404, (verb, answer.text)


async def test_the_registry_lists_each_type_with_its_schemas(api: httpx.AsyncClient) -> None:
    types = {t["type"]: t for t in (await api.get("/v1/action-types")).json()}
    assert {"log", "delay", "http_request", "demo.approval"} <= set(types)
    log = (await api.get("/v1/action-types/log")).json()
    assert log == types["log"]
    assert log["params_schema"]["required"] == ["message"]
    assert "logged" in log["outputs_schema"]["properties"]


async def test_an_event_stream_replays_then_follows_live_and_resumes_without_gap(
    api: httpx.AsyncClient, karma: EmbeddedKarma
) -> None:
    created = await api.post("/v1/actions", json={"type": "delay", "params": {"seconds": 1.5}})
    action_id = created.json()["action_id"]
    await until_state(api, action_id, "STARTED")
    hub = karma.api.services.hub if karma.api else None
    assert hub is not None
    # Many subscribers share the one source; each gets every transition once, in order.
    streams = await asyncio.gather(*(sse_events(api, action_id) for _ in range(20)))
    assert hub.subscribers == 0  # each left when its stream ended
    first = streams[0]
    seqs = [int(e["id"]) for e in first]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert first[-1]["event"] == "action.succeeded"
    assert [json.loads(e["data"])["seq"] for e in first] == seqs
    assert all(s == first for s in streams)
    # A reconnect after event 2 gets 3.. only (the action has ended: from its status).
    resumed = await sse_events(api, action_id, last_event_id="2")
    assert [int(e["id"]) for e in resumed] == seqs[2:]
    ended = await api.get(
        f"/v1/actions/{action_id}/transitions",
        headers={"Accept": "text/event-stream", "Last-Event-ID": str(seqs[-1])},
    )
    assert ended.status_code == 204
    bad = await api.get(
        f"/v1/actions/{action_id}/transitions",
        headers={"Accept": "text/event-stream", "Last-Event-ID": "x"},
    )
    assert (bad.status_code, bad.headers["content-type"]) == (422, PROBLEM)
    plain = await api.get(f"/v1/actions/{action_id}/transitions")
    assert [t["seq"] for t in plain.json()] == seqs


async def test_a_stream_resumed_mid_flight_delivers_the_rest_live(
    api: httpx.AsyncClient, karma: EmbeddedKarma
) -> None:
    created = await api.post(
        "/v1/actions", json={"type": "demo.approval", "params": {"change": "resume me"}}
    )
    action_id = created.json()["action_id"]
    waiting = await until_state(api, action_id, "WAITING")
    seen = len(waiting["transitions"])
    assert karma.api is not None
    hub = karma.api.services.hub
    before = hub.subscribers
    stream = asyncio.create_task(sse_events(api, action_id, last_event_id=str(seen)))
    async with asyncio.timeout(10):  # subscribed; nothing new until the decision
        while hub.subscribers == before:  # noqa: ASYNC110 - polling a counter
            await asyncio.sleep(0.01)
    assert not stream.done()
    decided = await api.post(
        f"/v1/actions/{action_id}/decision", json={"decision": "approve", "by": "dora"}
    )
    assert decided.status_code == 200, decided.text
    events = await asyncio.wait_for(stream, 30)
    ids = [int(e["id"]) for e in events]
    assert ids == list(range(seen + 1, seen + 1 + len(ids))) and ids, ids
    assert events[-1]["event"] == "action.succeeded"


async def test_decisions_409_when_not_waiting_and_422_when_malformed(
    api: httpx.AsyncClient,
) -> None:
    created = await api.post(
        "/v1/actions", json={"type": "demo.approval", "params": {"change": "scale web to 6"}}
    )
    action_id = created.json()["action_id"]
    await until_state(api, action_id, "WAITING")
    for body, field in (
        ({"decision": "maybe", "by": "erin"}, "decision"),
        ({"decision": "reject", "by": "erin"}, "reason"),
        ({"decision": "approve", "by": " "}, "by"),
    ):
        answer = await api.post(f"/v1/actions/{action_id}/decision", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert field in answer.json()["detail"]
    missing = await api.post(f"/v1/actions/{action_id}/decision", json={"by": "erin"})
    assert missing.status_code == 422
    ok = await api.post(
        f"/v1/actions/{action_id}/decision",
        json={"decision": "reject", "by": "erin", "reason": "not today"},
    )
    assert ok.status_code == 200, ok.text
    await until_state(api, action_id, "FAILED")
    late = await api.post(
        f"/v1/actions/{action_id}/decision", json={"decision": "approve", "by": "erin"}
    )
    assert (late.status_code, late.headers["content-type"]) == (409, PROBLEM)


async def test_cancel_ends_a_running_action_and_409s_once_it_has_ended(
    api: httpx.AsyncClient,
) -> None:
    created = await api.post("/v1/actions", json={"type": "delay", "params": {"seconds": 600}})
    action_id = created.json()["action_id"]
    await until_state(api, action_id, "STARTED")
    assert (await api.post(f"/v1/actions/{action_id}/cancel")).status_code == 202
    await until_state(api, action_id, ActionState.CANCELLED.value)
    again = await api.post(f"/v1/actions/{action_id}/cancel")
    assert again.status_code == 409


async def test_listing_filters_through_visibility_and_pages(api: httpx.AsyncClient) -> None:
    entity = unique("api-entity")
    ids = set()
    for i in range(3):
        created = await api.post(
            "/v1/actions",
            json={"type": "log", "params": {"message": f"{i}"}, "entity_id": entity},
        )
        ids.add(created.json()["action_id"])
    for action_id in ids:
        await until_state(api, action_id, "SUCCEEDED")
    async with asyncio.timeout(30):  # visibility is eventually consistent
        while True:
            page = (await api.get("/v1/actions", params={"entity": entity})).json()
            if {a["action_id"] for a in page["actions"]} == ids and all(
                a["state"] == "SUCCEEDED" for a in page["actions"]
            ):
                break
            await asyncio.sleep(0.2)
    assert all(a["entity_id"] == entity and a["action_type"] == "log" for a in page["actions"])
    paged: list[str] = []
    token = None
    while True:
        params = {"entity": entity, "page_size": "2", **({"page_token": token} if token else {})}
        answer = (await api.get("/v1/actions", params=params)).json()
        paged += [a["action_id"] for a in answer["actions"]]
        token = answer["next_page_token"]
        if not token:
            break
    assert sorted(paged) == sorted(ids)
    assert (await api.get("/v1/actions", params={"entity": unique("none")})).json()["actions"] == []
    quote = await api.get("/v1/actions", params={"entity": "it's \\ odd"})
    assert quote.status_code == 200 and quote.json()["actions"] == []
    # A time window on the start time (with a timezone; a naive time is refused).
    started = min(datetime.fromisoformat(a["started_at"]) for a in page["actions"])
    for window, expected in (
        ({"started_after": (started - timedelta(seconds=1)).isoformat()}, ids),
        ({"started_after": (started + timedelta(hours=1)).isoformat()}, set()),
        ({"started_before": started.isoformat()}, set()),
        ({"started_before": (started + timedelta(hours=1)).isoformat()}, ids),
    ):
        answer = await api.get("/v1/actions", params={"entity": entity, **window})
        assert answer.status_code == 200, answer.text
        assert {a["action_id"] for a in answer.json()["actions"]} == expected, window
    naive = await api.get("/v1/actions", params={"started_after": "2026-11-25T10:00:00"})
    assert naive.status_code == 422
    assert naive.json()["errors"][0]["field"] == "started_after"
    bad_state = await api.get("/v1/actions", params={"state": "NAPPING"})
    assert (bad_state.status_code, bad_state.headers["content-type"]) == (422, PROBLEM)
    for token in ("%%%", "bm90IGEgdG9rZW4-"):  # not base64; base64 but not Temporal's
        bad_token = await api.get("/v1/actions", params={"page_token": token})
        assert bad_token.status_code in (400, 422), (token, bad_token.text)
        assert bad_token.headers["content-type"] == PROBLEM


async def test_the_ledger_copy_is_served_by_the_process_that_owns_it(
    api: httpx.AsyncClient,
) -> None:
    created = await api.post("/v1/actions", json={"type": "log", "params": {"message": "led"}})
    action_id = created.json()["action_id"]
    done = await until_state(api, action_id, "SUCCEEDED")
    async with asyncio.timeout(30):
        while True:
            answer = await api.get(f"/v1/ledger/actions/{action_id}")
            if answer.status_code == 200 and len(answer.json()) == len(done["transitions"]):
                break
            assert answer.status_code in (200, 404), answer.text
            await asyncio.sleep(0.1)
    rows = answer.json()
    assert [(r["seq"], r["event_type"]) for r in rows] == [
        (t["seq"], t["event_type"]) for t in done["transitions"]
    ]
    assert rows[-1]["state"] == "SUCCEEDED" and rows[0]["action_type"] == "log"


async def test_the_dlq_shows_each_letter_with_its_bytes_and_replays_by_position(
    api: httpx.AsyncClient, karma: EmbeddedKarma
) -> None:
    kafka = karma.settings.kafka
    bad_text = f'{{"not": "a request {unique()}"'.encode()
    bad_bytes = b"\xff\xfe" + unique().encode("utf-16-le")
    positions = await produce_each(
        kafka, [(kafka.topics.requested, bad_text), (kafka.topics.requested, bad_bytes)]
    )
    await dead_letters_at(kafka, positions)
    letters = (await api.get("/v1/dlq", params={"topic": kafka.topics.requested})).json()
    by_origin = {(d["topic"], d["partition"], d["offset"]): d for d in letters}
    text_letter, bytes_letter = (by_origin[p] for p in positions)
    assert (text_letter["encoding"], text_letter["value"]) == ("utf-8", bad_text.decode())
    assert "not JSON" in text_letter["reason"]
    assert bytes_letter["encoding"] == "base64"
    assert base64.b64decode(bytes_letter["value"]) == bad_bytes
    assert len((await api.get("/v1/dlq", params={"limit": 1})).json()) == 1
    refused = await api.post("/v1/dlq/replay", json={"positions": ["nowhere", "0:999999999"]})
    assert refused.status_code == 422
    assert [e["field"] for e in refused.json()["errors"]] == ["nowhere", "0:999999999"]
    replayed = await api.post("/v1/dlq/replay", json={"positions": [text_letter["position"]]})
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()[0]["position"] == text_letter["position"]
    # Replayed, it is dead-lettered again (same reason), now from its replay.
    async with asyncio.timeout(60):
        while True:
            again = [
                d
                for d in (await api.get("/v1/dlq", params={"limit": 10_000})).json()
                if d["value"] == bad_text.decode() and d["position"] != text_letter["position"]
            ]
            if again:
                break
            await asyncio.sleep(0.3)


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def test_five_hundred_subscribers_share_one_source(
    karma: EmbeddedKarma, report: Callable[[str], None]
) -> None:
    """500 concurrent event streams of one action on one process: each gets every
    transition once, in order, and the hub stays one consumer."""
    assert karma.api is not None
    hub = karma.api.services.hub
    limits = httpx.Limits(max_connections=600, max_keepalive_connections=0)
    headers = bearer(admin_key(karma))
    async with httpx.AsyncClient(
        base_url=karma.api.url, timeout=120, limits=limits, headers=headers
    ) as api:
        created = await api.post(
            "/v1/actions", json={"type": "demo.approval", "params": {"change": "fan out"}}
        )
        action_id = created.json()["action_id"]
        await until_state(api, action_id, "WAITING")
        before, delivered = rss_bytes(), hub.delivered
        # Ten readers of 50 streams each: one key's rate (100/s) is not what is measured.
        keys = [new_key(karma, Scope.READ) for _ in range(10)]
        streams = [
            asyncio.create_task(sse_events(api, action_id, key=keys[i % 10])) for i in range(500)
        ]
        async with asyncio.timeout(120):
            while hub.subscribers < 500:  # noqa: ASYNC110 - polling a counter
                await asyncio.sleep(0.05)
        per_subscriber = (rss_bytes() - before) / 500
        decided = await api.post(
            f"/v1/actions/{action_id}/decision", json={"decision": "approve", "by": "fan"}
        )
        assert decided.status_code == 200, decided.text
        results = await asyncio.wait_for(asyncio.gather(*streams), 120)
    seqs = [int(e["id"]) for e in results[0]]
    assert seqs == list(range(1, len(seqs) + 1)) and results[0][-1]["event"] == "action.succeeded"
    assert all(r == results[0] for r in results)
    live = hub.delivered - delivered
    assert live >= 500  # the live transitions went out through the hub, to each subscriber
    report(
        f"SSE: 500 subscribers of one action on one process, {len(seqs)} events each; "
        f"~{per_subscriber / 1024:.0f} KiB of RSS per subscriber (server and client in one "
        f"process), {live} live deliveries from one Kafka consumer"
    )


async def test_a_stream_ends_when_the_workflow_closes_without_a_terminal_transition(
    api: httpx.AsyncClient, karma: EmbeddedKarma
) -> None:
    created = await api.post("/v1/actions", json={"type": "delay", "params": {"seconds": 600}})
    action_id = created.json()["action_id"]
    await until_state(api, action_id, "STARTED")
    stream = asyncio.create_task(sse_events(api, action_id))
    await karma.client.handle(action_id).workflow_closed()  # it exists
    await karma.temporal.get_workflow_handle(f"action-{action_id}").terminate("by the test")
    events = await asyncio.wait_for(stream, 30)  # re-read when quiet: ends, with the reason
    assert events[-1]["event"] == "error"
    assert "closed without a terminal transition" in json.loads(events[-1]["data"])["detail"]
    # Terminated, it is not cancellable: 409, decided by Temporal, not by a worker.
    assert (await api.post(f"/v1/actions/{action_id}/cancel")).status_code == 409


async def test_resuming_an_ended_stream_is_204_and_a_future_id_is_refused(
    api: httpx.AsyncClient,
) -> None:
    created = await api.post("/v1/actions", json={"type": "log", "params": {"message": "end"}})
    action_id = created.json()["action_id"]
    done = await until_state(api, action_id, "SUCCEEDED")
    last = len(done["transitions"])
    sse = {"Accept": "text/event-stream"}
    ended = await api.get(
        f"/v1/actions/{action_id}/transitions", headers={**sse, "Last-Event-ID": str(last)}
    )
    assert ended.status_code == 204  # EventSource stops reconnecting
    for future in (str(last + 5).encode(), b"\xb2", b"-1"):  # \xb2: a digit, not ASCII
        answer = await api.get(
            f"/v1/actions/{action_id}/transitions",
            headers={b"Accept": b"text/event-stream", b"Last-Event-ID": future},
        )
        assert (answer.status_code, answer.headers["content-type"]) == (422, PROBLEM), future


async def test_a_stuck_action_can_be_cancelled_without_a_worker(
    api: httpx.AsyncClient, karma: EmbeddedKarma
) -> None:
    request = ActionRequest.new("log", {"message": "nobody polls this queue"})
    handle = await karma.temporal.start_workflow(
        names.ACTION_WORKFLOW,
        request,
        id=workflow_id_for(request.action_id),
        task_queue=unique("no-worker"),
    )
    try:
        answer = await api.post(f"/v1/actions/{request.action_id}/cancel")
        assert answer.status_code == 202, answer.text
    finally:
        await handle.terminate()


async def test_what_the_api_refuses_before_reading(
    api: httpx.AsyncClient, karma: EmbeddedKarma
) -> None:
    huge = {
        "type": "log",
        "params": {"message": "m" * (4 * karma.settings.limits.max_payload_bytes)},
    }
    answer = await api.post("/v1/actions", json=huge)
    assert (answer.status_code, answer.headers["content-type"]) == (413, PROBLEM)
    rebound = await api.get("/v1/action-types", headers={"Host": "evil.example"})
    assert rebound.status_code == 400  # a DNS-rebinding page gets nothing
    created = await api.post("/v1/actions", json={"type": "log", "params": {"message": "cb"}})
    action_id = created.json()["action_id"]
    other = await api.post(
        f"/v1/actions/{action_id}/callbacks", json={"event_type": "x", "action_id": "act_other"}
    )
    assert (other.status_code, other.json()["errors"][0]["field"]) == (422, "action_id")


async def test_stopping_the_api_ends_open_streams_cleanly_and_they_resume_elsewhere(
    api: httpx.AsyncClient, karma: EmbeddedKarma
) -> None:
    settings = karma.settings.model_copy(
        update={"api": karma.settings.api.model_copy(update={"port": free_port()})}
    )
    other = ApiServer(
        ApiServices(client=karma.client, settings=settings, hub=TransitionHub(settings))
    )
    created = await api.post(
        "/v1/actions", json={"type": "demo.approval", "params": {"change": "drain"}}
    )
    action_id = created.json()["action_id"]
    await until_state(api, action_id, "WAITING")
    async with (
        other,
        httpx.AsyncClient(base_url=other.url, timeout=30, headers=dict(api.headers)) as leaving,
    ):
        stream = asyncio.create_task(sse_events(leaving, action_id))
        async with asyncio.timeout(30):
            while other.services.hub.subscribers < 1:  # noqa: ASYNC110 - polling a counter
                await asyncio.sleep(0.02)
        loop = asyncio.get_running_loop()
        began = loop.time()
        await other.stop()
        before = await asyncio.wait_for(stream, 10)  # ended, not cut: no error raised
        took = loop.time() - began
    assert took < 2, took
    assert [e["event"] for e in before][-1] == "action.waiting"
    decided = await api.post(
        f"/v1/actions/{action_id}/decision", json={"decision": "approve", "by": "drain"}
    )
    assert decided.status_code == 200, decided.text
    rest = await sse_events(api, action_id, last_event_id=before[-1]["id"])
    seqs = [int(e["id"]) for e in before + rest]
    assert seqs == list(range(1, len(seqs) + 1))
    assert rest[-1]["event"] == "action.succeeded"
