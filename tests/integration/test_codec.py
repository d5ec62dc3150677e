"""Payload encryption on the real stack: Temporal's history (as `temporal workflow show`
prints it) holds only ciphertext, the API's codec endpoint decodes it for the Web UI, keys
rotate without breaking a running action, and the Web UI reads what each action is."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from karma.api.app import ApiServices
from karma.api.hub import TransitionHub
from karma.api.keys import Scope
from karma.api.server import ApiServer
from karma.client import KarmaClient, connect_temporal
from karma.codec import ENCODING, new_key
from karma.embedded.binaries import temporal_binary
from karma.embedded.process import free_port
from karma.lifecycle import ActionState
from karma.settings import Settings
from tests.conftest import unique
from tests.support.api import bearer
from tests.support.api import new_key as new_api_key
from tests.support.waiting import reached
from workers.embedded import EmbeddedKarma
from workers.worker import ActionWorker

QUEUE = "codec"
UI = "http://127.0.0.1:8233"
OLD, NEW = f"old:{new_key()}", f"new:{new_key()}"


def with_keys(karma: EmbeddedKarma, keys: str) -> Settings:
    update = {"keys": SecretStr(keys), "ui_origins": [UI], "ui_without_key": True}
    codec = karma.settings.codec.model_copy(update=update)
    api = karma.settings.api.model_copy(update={"port": free_port()})
    return karma.settings.model_copy(update={"codec": codec, "api": api})


async def client_of(karma: EmbeddedKarma, settings: Settings) -> KarmaClient:
    return KarmaClient(
        await connect_temporal(settings),
        task_queue=QUEUE,
        registry=karma.client.registry,
        limits=settings.limits,
    )


@pytest.fixture
async def codec_api(karma: EmbeddedKarma) -> AsyncIterator[ApiServer]:
    """The API of a deployment whose keyring is NEW, OLD (rotated)."""
    settings = with_keys(karma, f"{NEW},{OLD}")
    client = await client_of(karma, settings)
    services = ApiServices(client=client, settings=settings, hub=TransitionHub(settings))
    async with ApiServer(services) as server:
        yield server


async def workflow_show(
    karma: EmbeddedKarma, workflow_id: str, *codec: str
) -> tuple[str, list[Any]]:
    """`temporal workflow show --output json` (with `codec` options): its text and the
    history's events."""
    process = await asyncio.create_subprocess_exec(
        str(temporal_binary()), "workflow", "show",
        "--address", karma.settings.temporal.address,
        "--namespace", karma.settings.temporal.namespace,
        "--workflow-id", workflow_id, "--output", "json", *codec,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    text = out.decode()
    document = json.loads(text)
    return text, document["events"]


def input_payload(events: list[Any]) -> dict[str, Any]:
    started = events[0]["workflowExecutionStartedEventAttributes"]
    payload: dict[str, Any] = started["input"]["payloads"][0]
    return payload


async def test_history_holds_ciphertext_the_codec_endpoint_decodes_and_keys_rotate(
    karma: EmbeddedKarma, codec_api: ApiServer
) -> None:
    marker = unique("change")
    # Requested and waiting under the OLD key alone.
    old = with_keys(karma, OLD)
    client = await client_of(karma, old)
    worker_client = await connect_temporal(old)
    async with ActionWorker(worker_client, old, registry=client.registry, task_queue=QUEUE):
        handle = await client.request("demo.approval", {"change": marker}, entity_id="svc:web")
        await reached(handle, ActionState.WAITING)
    text, events = await workflow_show(karma, handle.workflow_id)
    assert marker not in text  # Temporal holds ciphertext only
    sealed = input_payload(events)
    metadata = {k: base64.b64decode(v) for k, v in sealed["metadata"].items()}
    assert metadata == {"encoding": ENCODING, "encryption-key-id": b"old"}

    # The keyring rotates (NEW encrypts, OLD still decrypts): the running action goes on.
    rotated = with_keys(karma, f"{NEW},{OLD}")
    client = await client_of(karma, rotated)
    worker_client = await connect_temporal(rotated)
    async with ActionWorker(worker_client, rotated, registry=client.registry, task_queue=QUEUE):
        handle = client.handle(handle.action_id)
        await handle.approve(by="ops", reason=marker)
        outcome = await asyncio.wait_for(handle.result(), 60)
    assert outcome.state is ActionState.SUCCEEDED
    assert outcome.outputs["applied"] == marker
    text, events = await workflow_show(karma, handle.workflow_id)
    assert marker not in text
    key_ids = {
        base64.b64decode(p["metadata"]["encryption-key-id"]) for e in events for p in _payloads(e)
    }
    assert key_ids == {b"old", b"new"}  # written before and after the rotation

    # The codec endpoint (the Web UI's origin needs no key; others do) decodes both.
    every = [p for e in events for p in _payloads(e)]
    async with httpx.AsyncClient(base_url=codec_api.url, timeout=30) as http:
        refused = await http.post("/codec/decode", json={"payloads": every})
        assert refused.status_code == 401
        preflight = await http.options(
            "/codec/decode",
            headers={"Origin": UI, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == UI
        assert "x-namespace" in preflight.headers["access-control-allow-headers"]
        elsewhere = await http.options("/codec/decode", headers={"Origin": "http://evil.test"})
        assert "access-control-allow-origin" not in elsewhere.headers
        decoded = await http.post(
            "/codec/decode",
            json={"payloads": every},
            headers={"Origin": UI, "X-Namespace": karma.settings.temporal.namespace},
        )
        assert decoded.status_code == 200, decoded.text
        assert decoded.headers["access-control-allow-origin"] == UI
        assert "x-karma-undecoded" not in decoded.headers
        clear = [base64.b64decode(p["data"]).decode() for p in decoded.json()["payloads"]]
        assert len(clear) == len(every)
        assert any(marker in c and "demo.approval" in c for c in clear)  # the request
        assert any(f'"applied":"{marker}"' in c.replace(" ", "") for c in clear)  # the result
        for p in decoded.json()["payloads"]:
            assert base64.b64decode(p["metadata"]["encoding"]) == b"json/plain"
        # A tenant's key may not decode: payloads are any tenant's.
        tenant_key = bearer(new_api_key(karma, Scope.READ, tenant=unique("t")))
        by_tenant = await http.post("/codec/decode", json={"payloads": every}, headers=tenant_key)
        assert by_tenant.status_code == 403
        # With a key (any origin), encode then decode round-trips under the primary key.
        key = bearer(new_api_key(karma, Scope.READ))
        plain = {"metadata": {"encoding": base64.b64encode(b"json/plain").decode()},
                 "data": base64.b64encode(b'{"x": 1}').decode()}  # fmt: skip
        encoded = await http.post("/codec/encode", json={"payloads": [plain]}, headers=key)
        assert encoded.status_code == 200, encoded.text
        sealed_again = encoded.json()["payloads"][0]
        assert base64.b64decode(sealed_again["metadata"]["encryption-key-id"]) == b"new"
        back = await http.post("/codec/decode", json={"payloads": [sealed_again]}, headers=key)
        assert back.json()["payloads"] == [plain]
        # A payload under a key this keyring lacks comes back as it is, and is counted.
        foreign = dict(sealed_again)
        foreign["metadata"] = {
            **sealed_again["metadata"],
            "encryption-key-id": base64.b64encode(b"gone").decode(),
        }
        kept = await http.post("/codec/decode", json={"payloads": [foreign]}, headers=key)
        assert kept.status_code == 200
        assert kept.headers["x-karma-undecoded"] == "1"
        assert kept.json()["payloads"] == [foreign]
        bad = await http.post("/codec/decode", content=b"{not json", headers=key)
        assert bad.status_code == 422
    # Temporal's own CLI decodes through the endpoint with a key.
    api_key = new_api_key(karma, Scope.READ)
    _, events = await workflow_show(
        karma,
        handle.workflow_id,
        "--codec-endpoint", f"{codec_api.url}/codec",
        "--codec-auth", f"Bearer {api_key}",
    )  # fmt: skip
    shown = [base64.b64decode(p["data"]).decode() for e in events for p in _payloads(e)]
    assert any(marker in text for text in shown)
    assert not any("encryption-key-id" in p["metadata"] for e in events for p in _payloads(e))


# Not Karma's data, so not encoded: search attributes (Temporal indexes them) and the SDK's
# own bookkeeping of local activities (seq, activity type).
NOT_ENCODED = ("searchAttributes", "markerRecordedEventAttributes.details.data")


def _payloads(event: dict[str, Any]) -> list[dict[str, Any]]:
    """Every payload of Karma's an event of `temporal workflow show --output json` carries."""
    found: list[dict[str, Any]] = []

    def walk(node: Any, path: str = "") -> None:
        if any(part in path for part in NOT_ENCODED):
            return
        if isinstance(node, dict):
            metadata = node.get("metadata")
            if "data" in node and isinstance(metadata, dict) and "encoding" in metadata:
                found.append(node)
                return
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for value in node:
                walk(value, path)

    walk(event)
    return found


async def test_the_web_ui_says_what_each_action_is(karma: EmbeddedKarma) -> None:
    tenant = unique("acme")
    handle = await karma.client.request(
        "demo.approval", {"change": "x"}, entity_id="svc:api", tenant=tenant
    )
    await reached(handle, ActionState.WAITING)
    described = await karma.temporal.get_workflow_handle(handle.workflow_id).describe()
    assert await described.static_summary() == f"demo.approval svc:api [{tenant}]"
    details = await described.static_details()
    assert details is not None
    assert "**type**: `demo.approval`" in details and f"**tenant**: `{tenant}`" in details
    assert "x" not in details.split("parameters")[1].replace("`change`", "")  # no values
    # The current details follow the action (a query of the workflow's metadata).
    metadata = await karma.temporal.get_workflow_handle(handle.workflow_id).query(
        "__temporal_workflow_metadata"
    )
    assert "**WAITING**" in metadata.current_details
    await handle.approve(by="ops")
    await asyncio.wait_for(handle.result(), 60)
    metadata = await karma.temporal.get_workflow_handle(handle.workflow_id).query(
        "__temporal_workflow_metadata"
    )
    assert metadata.current_details.startswith("**SUCCEEDED**")


async def test_the_embedded_web_ui_decodes_through_the_api(karma: EmbeddedKarma) -> None:
    """The dev server's Web UI is configured with the API's codec endpoint, and the API
    answers that UI's origin (CORS)."""
    assert karma.api is not None
    ui = karma.servers.temporal.ui_url
    async with httpx.AsyncClient(timeout=30) as http:
        settings = (await http.get(f"{ui}/api/v1/settings")).json()
        assert settings["Codec"]["Endpoint"] == f"{karma.api.url}/codec"
        preflight = await http.options(
            f"{karma.api.url}/codec/decode",
            headers={"Origin": ui, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.headers["access-control-allow-origin"] == ui


async def test_failure_messages_are_encrypted_too(karma: EmbeddedKarma) -> None:
    """What failed can be telling (a URL, a quoted value): Temporal keeps it encrypted, and
    Karma's clients still read it."""
    settings = with_keys(karma, OLD)
    client = await client_of(karma, settings)
    worker_client = await connect_temporal(settings)
    async with ActionWorker(worker_client, settings, registry=client.registry, task_queue=QUEUE):
        handle = await client.request("test.permanent")
        outcome = await asyncio.wait_for(handle.result(), 60)
    assert outcome.state is ActionState.FAILED
    assert outcome.error is not None
    assert outcome.error.message == "the target rejected the change"
    text, _ = await workflow_show(karma, handle.workflow_id)
    assert "Encoded failure" in text
    assert "the target rejected" not in text


async def test_without_a_key_only_on_loopback(karma: EmbeddedKarma) -> None:
    """An Origin header is easily forged: the keyless path is ignored when the API is
    reachable from elsewhere, and the Web UI then decodes with the console's cookie."""
    settings = with_keys(karma, OLD)
    exposed = settings.model_copy(
        update={"api": settings.api.model_copy(update={"host": "0.0.0.0"})}
    )
    services = ApiServices(client=karma.client, settings=exposed, hub=TransitionHub(exposed))
    async with ApiServer(services) as server, httpx.AsyncClient(base_url=server.url) as http:
        body: dict[str, list[Any]] = {"payloads": []}
        assert (
            await http.post("/codec/decode", json=body, headers={"Origin": UI})
        ).status_code == 401
        login = await http.post("/v1/session", json={"key": new_api_key(karma, Scope.READ)})
        assert login.status_code == 200
        # The Web UI includes credentials: the session cookie, without the console's header.
        decoded = await http.post("/codec/decode", json=body, headers={"Origin": UI})
        assert decoded.status_code == 200, decoded.text
        assert decoded.headers["access-control-allow-origin"] == UI
