"""API keys on the real stack: 401 without a valid key, 403 naming the missing scope, a
tenant's key confined to its tenant (404 for the others' ids), per-key rate limits (429 with
Retry-After), the console's session cookie, and `karma api-key` create/list/revoke."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from karma.api.app import ApiServices
from karma.api.hub import TransitionHub
from karma.api.keys import Scope, keys_path
from karma.api.server import ApiServer
from karma.embedded.process import free_port
from karma.ids import action_id_for_key
from karma.request import ActionRequest
from tests.conftest import unique
from tests.support.api import admin_key, bearer, new_key
from tests.support.kafka import dead_letters_at, produce_each
from tests.support.processes import Spawn, karma_env, run_karma
from workers.embedded import EmbeddedKarma

PROBLEM = "application/problem+json"


@pytest.fixture
async def http(karma: EmbeddedKarma) -> AsyncIterator[httpx.AsyncClient]:
    assert karma.api is not None
    async with httpx.AsyncClient(base_url=karma.api.url, timeout=30) as client:
        yield client


async def until_waiting(http: httpx.AsyncClient, key: str, action_id: str) -> None:
    async with asyncio.timeout(30):
        while True:
            answer = await http.get(f"/v1/actions/{action_id}", headers=bearer(key))
            assert answer.status_code == 200, answer.text
            if answer.json()["decision_request"] is not None:
                return
            await asyncio.sleep(0.05)


async def test_without_a_valid_key_every_v1_route_answers_401(
    http: httpx.AsyncClient, karma: EmbeddedKarma
) -> None:
    revoked = new_key(karma, Scope.ADMIN)
    from karma.api.keys import KeyStore, parse

    parsed = parse(revoked)
    assert parsed is not None
    KeyStore.of(karma.settings).revoke(parsed[0])
    real = admin_key(karma)
    tampered = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    for headers in (
        {},
        bearer("karma_nope_nope"),
        bearer("not a key at all"),
        bearer(tampered),
        bearer(revoked),
        {"X-API-Key": tampered},
    ):
        for method, path in (
            ("GET", "/v1/actions"),
            ("GET", "/v1/actions/act_x"),
            ("POST", "/v1/actions"),
            ("GET", "/v1/action-types"),
            ("GET", "/v1/dlq"),
            ("POST", "/v1/dlq/replay"),
            ("GET", "/v1/ledger/actions/act_x"),
            ("POST", "/v1/actions/act_x/decision"),
        ):
            answer = await http.request(method, path, headers=headers, json={})
            assert answer.status_code == 401, (headers, method, path, answer.text)
            assert answer.headers["content-type"] == PROBLEM
            assert answer.headers["www-authenticate"].startswith("Bearer")
    # The health checks and the console need no key.
    assert (await http.get("/healthz")).status_code == 200
    assert (await http.get("/readyz")).status_code == 200
    assert (await http.get("/v1/info")).json()["auth"] is True
    # Either header works.
    assert (await http.get("/v1/action-types", headers={"X-API-Key": real})).status_code == 200


async def test_each_route_needs_its_scope_and_403_names_it(
    http: httpx.AsyncClient, karma: EmbeddedKarma
) -> None:
    reader = new_key(karma, Scope.READ)
    requester = new_key(karma, Scope.REQUEST)
    decider = new_key(karma, Scope.DECIDE, Scope.READ)
    created = await http.post(
        "/v1/actions",
        json={"type": "demo.approval", "params": {"change": "scopes"}},
        headers=bearer(requester),
    )
    assert created.status_code == 202, created.text
    action_id = created.json()["action_id"]
    await until_waiting(http, reader, action_id)

    refused = await http.post(
        "/v1/actions", json={"type": "log", "params": {"message": "x"}}, headers=bearer(reader)
    )
    assert refused.status_code == 403
    assert "'request'" in refused.json()["detail"]
    assert (
        await http.get(f"/v1/actions/{action_id}", headers=bearer(requester))
    ).status_code == 403
    for key in (reader, requester):
        answer = await http.post(
            f"/v1/actions/{action_id}/decision",
            json={"decision": "approve", "by": "me"},
            headers=bearer(key),
        )
        assert answer.status_code == 403
        assert "'decide'" in answer.json()["detail"]
    replay = await http.post("/v1/dlq/replay", json={"positions": ["0:0"]}, headers=bearer(decider))
    assert replay.status_code == 403
    assert "'admin'" in replay.json()["detail"]
    decided = await http.post(
        f"/v1/actions/{action_id}/decision",
        json={"decision": "approve", "by": "the decider"},
        headers=bearer(decider),
    )
    assert decided.status_code == 200, decided.text


async def test_a_tenant_key_sees_and_touches_only_its_tenant(
    http: httpx.AsyncClient, karma: EmbeddedKarma
) -> None:
    tenant_a, tenant_b = unique("a"), unique("b")
    all_scopes = (Scope.READ, Scope.REQUEST, Scope.DECIDE)
    key_a = new_key(karma, *all_scopes, tenant=tenant_a)
    key_b = new_key(karma, *all_scopes, tenant=tenant_b)
    admin = admin_key(karma)

    # The tenant comes from the key; naming another is refused.
    other = await http.post(
        "/v1/actions",
        json={"type": "log", "params": {"message": "x"}, "tenant": tenant_b},
        headers=bearer(key_a),
    )
    assert other.status_code == 403
    assert other.json()["errors"][0]["field"] == "tenant"
    same_key = unique("idem")
    ids = {}
    for tenant, key in ((tenant_a, key_a), (tenant_b, key_b)):
        created = await http.post(
            "/v1/actions",
            json={"type": "demo.approval", "params": {"change": tenant}},
            headers={**bearer(key), "Idempotency-Key": same_key},
        )
        assert created.status_code == 202, created.text
        ids[tenant] = created.json()["action_id"]
        # A tenant's idempotency keys are its own.
        assert ids[tenant] == action_id_for_key(same_key, tenant)
    assert ids[tenant_a] != ids[tenant_b]
    await until_waiting(http, key_b, ids[tenant_b])
    status = (await http.get(f"/v1/actions/{ids[tenant_a]}", headers=bearer(key_a))).json()
    assert status["transitions"][0]["tags"]["tenant"] == tenant_a

    # A's key gets 404 (not 403) for every use of B's action, as for an id that is not there.
    b_id = ids[tenant_b]
    for method, path, body, headers in (
        ("GET", f"/v1/actions/{b_id}", None, {}),
        ("GET", f"/v1/actions/{b_id}/transitions", None, {}),
        ("GET", f"/v1/actions/{b_id}/transitions", None, {"Accept": "text/event-stream"}),
        ("POST", f"/v1/actions/{b_id}/cancel", None, {}),
        ("POST", f"/v1/actions/{b_id}/callbacks", {"event_type": "x"}, {}),
        ("POST", f"/v1/actions/{b_id}/decision", {"decision": "approve", "by": "a"}, {}),
        ("GET", f"/v1/ledger/actions/{b_id}", None, {}),
    ):
        answer = await http.request(method, path, json=body, headers={**bearer(key_a), **headers})
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.json()["detail"] == f"no action {b_id!r}"
    # B's action is untouched: still waiting, and B can decide it.
    decided = await http.post(
        f"/v1/actions/{b_id}/decision",
        json={"decision": "reject", "by": "b", "reason": "not today"},
        headers=bearer(key_b),
    )
    assert decided.status_code == 200, decided.text

    # Listings: A sees its own only, whatever tenant it asks for; the admin sees both.
    async with asyncio.timeout(30):
        while True:  # visibility trails the start a little
            page = await http.get("/v1/actions", headers=bearer(admin), params={"page_size": 1000})
            listed = {a["action_id"] for a in page.json()["actions"]}
            if set(ids.values()) <= listed:
                break
            await asyncio.sleep(0.1)
    for params in ({}, {"tenant": tenant_b}):
        page = await http.get("/v1/actions", headers=bearer(key_a), params=params)
        tenants = {a["tenant"] for a in page.json()["actions"]}
        assert tenants <= {tenant_a}, (params, tenants)
        assert (ids[tenant_a] in {a["action_id"] for a in page.json()["actions"]}) == (not params)

    # Dead letters: a tenant sees the letters that name it, nothing else.
    kafka = karma.settings.kafka
    marker = unique("dlq")
    poison = {"event_type": "action.requested", "tags": {"tenant": tenant_b}, "m": marker}
    positions = await produce_each(
        kafka,
        [
            (kafka.topics.requested, json.dumps(poison).encode()),
            (kafka.topics.requested, f"not json {marker}".encode()),
        ],
    )
    await dead_letters_at(kafka, positions)

    async def letters(key: str) -> list[str]:
        answer = await http.get("/v1/dlq", headers=bearer(key), params={"limit": 10_000})
        assert answer.status_code == 200, answer.text
        return [d["value"] for d in answer.json() if marker in (d["value"] or "")]

    assert len(await letters(admin)) == 2
    assert await letters(key_a) == []
    assert len(await letters(key_b)) == 1
    tenant_admin = new_key(karma, Scope.ADMIN, tenant=tenant_a)
    refused = await http.post(
        "/v1/dlq/replay", json={"positions": ["0:0"]}, headers=bearer(tenant_admin)
    )
    assert refused.status_code == 403


@pytest.fixture
async def slow_api(karma: EmbeddedKarma) -> AsyncIterator[ApiServer]:
    """An API of the same stack that allows 5 requests per minute and key."""
    api = karma.settings.api.model_copy(update={"port": free_port(), "rate_limit": "5/minute"})
    settings = karma.settings.model_copy(update={"api": api})
    services = ApiServices(client=karma.client, settings=settings, hub=TransitionHub(settings))
    async with ApiServer(services) as server:
        yield server


async def test_each_key_has_its_own_rate_and_429_says_when_to_retry(
    slow_api: ApiServer, karma: EmbeddedKarma
) -> None:
    first, second = new_key(karma, Scope.READ), new_key(karma, Scope.READ)
    async with httpx.AsyncClient(base_url=slow_api.url, timeout=30) as http:
        answers = [
            (await http.get("/v1/action-types", headers=bearer(first))).status_code
            for _ in range(7)
        ]
        assert answers == [200] * 5 + [429] * 2
        over = await http.get("/v1/action-types", headers=bearer(first))
        assert over.headers["content-type"] == PROBLEM
        assert 1 <= int(over.headers["retry-after"]) <= 60
        # Another key is not slowed by the first.
        assert (await http.get("/v1/action-types", headers=bearer(second))).status_code == 200
        # Health checks are not counted.
        assert (await http.get("/healthz")).status_code == 200


async def test_the_console_session_is_an_http_only_cookie_that_needs_its_header_to_change(
    http: httpx.AsyncClient, karma: EmbeddedKarma
) -> None:
    key = new_key(karma, Scope.READ, Scope.REQUEST, name="operator")
    refused = await http.post("/v1/session", json={"key": "karma_x_y"})
    assert refused.status_code == 401
    assert "karma_session" not in refused.cookies
    login = await http.post("/v1/session", json={"key": key})
    assert login.status_code == 200, login.text
    assert login.json()["name"] == "operator"
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    session = http.cookies["karma_session"]
    assert key.split("_", 2)[2] not in session  # a signed session, never the key
    # The client keeps the cookie: reads work with it alone.
    assert (await http.get("/v1/session")).json()["scopes"] == ["read", "request"]
    assert (await http.get("/v1/action-types")).status_code == 200
    body = {"type": "log", "params": {"message": "from the console"}}
    # A change made with the cookie alone (what a cross-site form could do) is refused.
    forged = await http.post("/v1/actions", json=body)
    assert forged.status_code == 403
    assert "X-Karma-Console" in forged.json()["detail"]
    made = await http.post("/v1/actions", json=body, headers={"X-Karma-Console": "1"})
    assert made.status_code == 202, made.text
    logout = await http.delete("/v1/session")
    assert logout.status_code == 204
    http.cookies.clear()  # as the browser does with the expired cookie
    assert (await http.get("/v1/session")).status_code == 401
    # A copy of the cookie kept after the logout is worth nothing here.
    for copy in (session, session[:-1] + ("0" if session[-1] != "0" else "1")):
        answer = await http.get("/v1/session", headers={"Cookie": f"karma_session={copy}"})
        assert answer.status_code == 401, copy
    # Revoking the key ends its sessions.
    other = await http.post("/v1/session", json={"key": key})
    assert other.status_code == 200
    from karma.api.keys import KeyStore, parse

    parsed = parse(key)
    assert parsed is not None
    KeyStore.of(karma.settings).revoke(parsed[0])
    assert (await http.get("/v1/session")).status_code == 401


async def test_karma_api_key_create_list_revoke(karma: EmbeddedKarma, tmp_path: Path) -> None:
    assert karma.api is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("KARMA_")}
    env["KARMA_DATA_DIR"] = str(karma.settings.data_dir)
    name = unique("cli")
    code, out = await run_karma(
        ["api-key", "create", "--scope", "read", "--scope", "request", "--tenant", "t1",
         "--name", name],
        env,
    )  # fmt: skip
    assert code == 0, out
    key = out.splitlines()[0]
    assert key.startswith("karma_")
    key_id = key.split("_")[1]
    assert f"id {key_id}, scopes read,request, tenant t1" in out
    # Only the hash is kept.
    stored = keys_path(karma.settings).read_text()
    assert key_id in stored
    assert key.split("_", 2)[2] not in stored
    assert keys_path(karma.settings).stat().st_mode & 0o777 == 0o600
    code, out = await run_karma(["api-key", "list", "--json"], env)
    assert code == 0, out
    listed: dict[str, Any] = {
        k["id"]: k for k in map(json.loads, out.splitlines()) if k["id"] == key_id
    }
    assert listed[key_id]["name"] == name
    assert listed[key_id]["tenant"] == "t1"
    assert "sha256" not in listed[key_id]
    assert key not in out
    async with httpx.AsyncClient(base_url=karma.api.url, timeout=30) as http:
        assert (await http.get("/v1/action-types", headers=bearer(key))).status_code == 200
        code, out = await run_karma(["api-key", "revoke", key_id], env)
        assert code == 0, out
        # Revoked: refused at its next request.
        assert (await http.get("/v1/action-types", headers=bearer(key))).status_code == 401
    code, out = await run_karma(["api-key", "revoke", "nosuchkey"], env)
    assert code == 2
    assert "no API key 'nosuchkey'" in out
    code, out = await run_karma(["api-key", "create", "--scope", "root"], env)
    assert code == 2
    assert "invalid choice" in out


async def test_karma_api_runs_alone_and_says_when_no_key_works(
    karma: EmbeddedKarma, tmp_path: Path, spawn: Spawn
) -> None:
    """`karma api` against the stack's servers, with its own data dir (no ledger of its own
    to read: the stack owns the embedded one)."""
    port = free_port()
    env = karma_env(karma.settings, KARMA_DATA_DIR=tmp_path, KARMA_API__PORT=str(port))
    api = spawn(["api"], env, "api")
    await api.wait_for_output("no API key works yet")
    code, out = await run_karma(["api-key", "create", "--scope", "request", "--scope", "read"], env)
    assert code == 0, out
    key = out.splitlines()[0]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        created = await http.post(
            "/v1/actions", json={"type": "log", "params": {"message": "alone"}}, headers=bearer(key)
        )
        assert created.status_code == 202, created.text
        action_id = created.json()["action_id"]
        async with asyncio.timeout(30):
            while True:
                status = await http.get(f"/v1/actions/{action_id}", headers=bearer(key))
                if status.json()["state"] == "SUCCEEDED":
                    break
                await asyncio.sleep(0.05)
        ledger = await http.get(f"/v1/ledger/actions/{action_id}", headers=bearer(key))
        assert ledger.status_code == 503  # this process does not read the ledger
    assert api.terminate() == 0, api.output()
    assert "stopped" in api.output()


async def test_a_tenant_cancels_its_stuck_action_and_others_get_404_not_its_trouble(
    http: httpx.AsyncClient, karma: EmbeddedKarma
) -> None:
    """The tenant check needs no worker: a stuck action's tenant is known from visibility."""
    tenant = unique("stuck")
    handle = await karma.client.request(
        "log", {"message": "nobody polls this queue"}, tenant=tenant, task_queue=unique("none")
    )
    own = new_key(karma, Scope.READ, Scope.REQUEST, tenant=tenant)
    other = new_key(karma, Scope.READ, Scope.REQUEST, tenant=unique("other"))
    try:
        for path in (f"/v1/actions/{handle.action_id}", f"/v1/actions/{handle.action_id}/cancel"):
            method = "POST" if path.endswith("cancel") else "GET"
            answer = await http.request(method, path, headers=bearer(other))
            assert answer.status_code == 404, answer.text
        cancelled = await http.post(f"/v1/actions/{handle.action_id}/cancel", headers=bearer(own))
        assert cancelled.status_code == 202, cancelled.text
    finally:
        await karma.temporal.get_workflow_handle(handle.workflow_id).terminate()


async def test_a_request_made_before_keys_were_scoped_by_tenant_keeps_its_action(
    karma: EmbeddedKarma,
) -> None:
    key, tenant = unique("before"), unique("acme")
    # As requested before the upgrade: the action id came from the key alone.
    old = ActionRequest.new("log", {"message": "once"}, idempotency_key=key, tenant=tenant)
    old = old.model_copy(update={"action_id": action_id_for_key(key)})
    first = await karma.client.submit(old)
    assert first.created
    retried = await karma.client.request(
        "log", {"message": "once"}, idempotency_key=key, tenant=tenant
    )
    assert (retried.action_id, retried.created) == (first.action_id, False)
    # Another tenant's same key is its own action.
    other = await karma.client.request("log", {"message": "x"}, idempotency_key=key, tenant="b")
    assert other.created
    assert other.action_id == action_id_for_key(key, "b")
