"""Keys for tests of the HTTP API (the embedded stack makes its admin key)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from karma.api.keys import KeyStore, Scope
from workers.embedded import EmbeddedKarma


def admin_key(karma: EmbeddedKarma) -> str:
    """The stack's local admin key."""
    assert karma.admin_key is not None, "the embedded stack makes an admin key (auth on)"
    return karma.admin_key


def new_key(karma: EmbeddedKarma, *scopes: Scope, tenant: str = "", name: str = "test") -> str:
    """A fresh key of the stack's API with these scopes."""
    token, _ = KeyStore.of(karma.settings).create(list(scopes), name=name, tenant=tenant)
    return token


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def until_state(api: httpx.AsyncClient, action_id: str, state: str) -> dict[str, Any]:
    """The action's status through the API once it is in `state` (within 30 s)."""
    async with asyncio.timeout(30):
        while True:
            answer = await api.get(f"/v1/actions/{action_id}")
            assert answer.status_code == 200, answer.text
            if answer.json()["state"] == state:
                return dict(answer.json())
            await asyncio.sleep(0.05)
