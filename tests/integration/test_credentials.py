"""Credentials on the embedded stack: `http_request` actions authenticate to the reference
service's `/protected` with a stored static token and with an OAuth 2.0 client whose short
lived token is refreshed, and no secret (the static token, the client secret, any access
token issued) appears anywhere but the executor: not in Temporal history, on Kafka, in the
ledger, in the logs, or in clear in the credentials file."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import httpx
import pytest
from pydantic import SecretStr

from bridge.topic_reader import read_topics
from karma.client import ActionHandle
from karma.credentials import CredentialStore, OAuth2ClientCredentials, StaticSecret
from karma.lifecycle import ActionState
from karma.logs import CHATTY_LIBRARIES
from karma.status import ActionStatus
from tests.conftest import unique
from tests.support.checks import assert_mirrored
from workers.embedded import EmbeddedKarma

TIMEOUT_S = 60
TOKEN_LIFETIME_S = 2.0


async def _run(
    karma: EmbeddedKarma, params: dict[str, object]
) -> tuple[ActionHandle, ActionStatus]:
    handle = await karma.client.request("http_request", params)
    await asyncio.wait_for(handle.result(), TIMEOUT_S)
    return handle, await handle.status()


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if condition():
                return
            await asyncio.sleep(0.05)


async def _histories(karma: EmbeddedKarma, handles: Sequence[ActionHandle]) -> bytes:
    """Every event of the actions' workflow histories: protobuf bytes (payloads raw) and
    JSON (as the Web UI and `temporal workflow show` see it)."""
    raw = b""
    for handle in handles:
        history = await karma.temporal.get_workflow_handle(handle.workflow_id).fetch_history()
        raw += b"".join(event.SerializeToString() for event in history.events)
        raw += history.to_json().encode()
    return raw


async def test_credentials_reach_the_executor_and_nowhere_else(
    karma: EmbeddedKarma, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in CHATTY_LIBRARIES:  # quietened by any `karma` command run in this process
        caplog.set_level(logging.DEBUG, logger=name)
    service = karma.reference_service
    assert service is not None
    host = urlsplit(service.url).hostname
    assert host is not None
    protected = f"{service.url}/protected"
    store = CredentialStore.of(karma.settings)

    # A long-lived API token, stored as a static credential for the service's host.
    static_client, static_secret = unique("static-client"), unique("static-client-SECRET")
    service.oauth.register(static_client, static_secret, lifetime_s=600)
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            f"{service.url}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(static_client, static_secret),
        )
    static_token = answer.json()["access_token"]
    static_id = unique("static")
    store.put(static_id, StaticSecret(value=SecretStr(static_token)), host)

    # An OAuth 2.0 client whose tokens live 2 s: the worker fetches and refreshes them.
    client_id, client_secret = unique("client"), unique("client-SECRET")
    service.oauth.register(client_id, client_secret, lifetime_s=TOKEN_LIFETIME_S)
    oauth_id = unique("oauth")
    client = OAuth2ClientCredentials(
        client_id=client_id,
        client_secret=SecretStr(client_secret),
        token_url=f"{service.url}/oauth/token",
    )
    store.put(oauth_id, client, host)

    statuses: list[ActionStatus] = []
    handles: list[ActionHandle] = []

    async def run(params: dict[str, object]) -> ActionStatus:
        handle, status = await _run(karma, params)
        handles.append(handle)
        statuses.append(status)
        return status

    # Without a credential the resource refuses: what follows succeeds because of them.
    refused = await run({"url": protected})
    assert refused.state is ActionState.FAILED and refused.error is not None
    assert "answered 401" in refused.error.message

    with_static = await run({"url": protected, "credential": static_id})
    assert with_static.state is ActionState.SUCCEEDED, with_static.error
    assert with_static.outputs["body"] == {"ok": True}

    first = await run({"url": protected, "credential": oauth_id})
    assert first.state is ActionState.SUCCEEDED, first.error
    [first_token] = service.oauth.issued[client_id]
    # The next action comes once the service no longer takes the first token.
    await _until(lambda: not service.oauth.valid(first_token))
    second = await run({"url": protected, "credential": oauth_id})
    assert second.state is ActionState.SUCCEEDED, second.error
    issued = service.oauth.issued[client_id]
    assert len(issued) == 2 and issued[0] == first_token  # refreshed once, not per call

    # A credential is only ever looked up for the URL's own host.
    elsewhere = await run({"url": protected.replace(host, "localhost"), "credential": oauth_id})
    assert elsewhere.state is ActionState.FAILED and elsewhere.error is not None
    assert elsewhere.error.message == f"no credential {oauth_id!r} for scope 'localhost'"
    assert len(service.oauth.issued[client_id]) == 2

    secrets = [static_token, static_secret, client_secret, *issued]
    action_ids = [s.action_id for s in statuses]

    history = await _histories(karma, handles)
    assert oauth_id.encode() in history and static_id.encode() in history  # it is searched
    assert [s for s in secrets if s.encode() in history] == []

    await assert_mirrored(karma, statuses)  # on Kafka and in the ledger, all of them
    topics = karma.settings.kafka.topics.all()  # transitions, the DLQ and the rest
    messages = await read_topics(karma.settings.kafka, topics)
    on_kafka = b"\n".join(
        (m.key or b"") + (m.value or b"") + json.dumps(sorted(m.headers)).encode()
        + b"".join(m.headers.values())
        for m in messages
    )  # fmt: skip
    assert all(a.encode() in on_kafka for a in action_ids)
    assert [s for s in secrets if s.encode() in on_kafka] == []

    rows = await asyncio.to_thread(
        karma.ledger.rows,
        f"SELECT * FROM {karma.settings.clickhouse.database}.action_events "
        "WHERE action_id IN %(ids)s",
        {"ids": action_ids},
    )
    in_ledger = repr(rows)
    assert len(rows) >= sum(len(s.transitions) for s in statuses) and oauth_id in in_ledger
    assert [s for s in secrets if s in in_ledger] == []

    logged = caplog.text + "".join(repr(r.args) for r in caplog.records)
    assert any(a in logged for a in action_ids)
    assert [s for s in secrets if s in logged] == []

    stored = store.path.read_text()
    assert oauth_id in stored and static_id in stored
    assert [s for s in secrets[:3] if s in stored] == []
    assert [
        s for s in secrets if s in json.dumps([s.model_dump(mode="json") for s in statuses])
    ] == []
