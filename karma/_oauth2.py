"""OAuth 2.0 client-credentials grant (RFC 6749 §4.4), with tokens cached in memory.

Hand-written (neither authlib nor httpx-auth is a dependency): one form POST with the
client authenticated by HTTP Basic as §2.3.1 says (id and secret form-encoded first). A
token is used until shortly before it expires (30 s or a tenth of its lifetime, whichever is
less) and one lock per credential makes concurrent attempts share one request. Messages
name the credential and the endpoint, never the client secret or a token.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus, urlsplit

import httpx

from karma.errors import PermanentError, TransientError
from karma.http_calls import retry_after

if TYPE_CHECKING:
    from karma.credentials import OAuth2ClientCredentials

MAX_MARGIN_S = 30.0
MARGIN_SHARE = 0.1
DEFAULT_LIFETIME_S = 60.0  # a token response without expires_in
MAX_LIFETIME_S = 86400.0
MAX_ERROR_CODE = 64


@dataclass(frozen=True)
class _Token:
    value: str
    refresh_at: float  # monotonic


def refresh_margin(lifetime_s: float) -> float:
    return min(MAX_MARGIN_S, MARGIN_SHARE * lifetime_s)


def basic_auth(client_id: str, client_secret: str) -> str:
    """RFC 6749 §2.3.1: each part form-urlencoded, then HTTP Basic."""
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


class TokenCache:
    def __init__(
        self, *, timeout_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._timeout_s = timeout_s
        self._clock = clock
        self._tokens: dict[Hashable, _Token] = {}
        self._locks: dict[Hashable, asyncio.Lock] = {}
        self.requests = 0  # token requests sent (for tests and metrics)

    def _fresh(self, key: Hashable) -> str | None:
        token = self._tokens.get(key)
        return token.value if token is not None and self._clock() < token.refresh_at else None

    async def token(self, key: Hashable, client: OAuth2ClientCredentials, *, what: str) -> str:
        """A current access token of `client`, fetched when none is cached or it is about
        to expire."""
        cached = self._fresh(key)
        if cached is not None:
            return cached
        async with self._locks.setdefault(key, asyncio.Lock()):
            cached = self._fresh(key)  # another attempt fetched it while this one waited
            if cached is not None:
                return cached
            asked_at = self._clock()  # lifetimes count from the request: on the safe side
            self.requests += 1
            value, lifetime = await self._fetch(client, what)
            self._tokens[key] = _Token(value, asked_at + lifetime - refresh_margin(lifetime))
            return value

    async def _fetch(self, client: OAuth2ClientCredentials, what: str) -> tuple[str, float]:
        secret = client.client_secret.get_secret_value()
        form = {"grant_type": "client_credentials"}
        if client.scope:
            form["scope"] = client.scope
        if client.audience:
            form["audience"] = client.audience
        parts = urlsplit(client.token_url)
        # No user:password@ and no query in messages.
        endpoint = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
        try:
            async with httpx.AsyncClient(timeout=self._timeout_s) as http:
                response = await http.post(
                    client.token_url,
                    data=form,
                    headers={
                        "Authorization": basic_auth(client.client_id, secret),
                        "Accept": "application/json",
                    },
                )
        except httpx.TransportError as exc:
            raise TransientError(
                f"{what}: token endpoint {endpoint} unreachable ({type(exc).__name__})"
            ) from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise TransientError(
                f"{what}: token endpoint {endpoint} answered {status}",
                retry_after=retry_after(response) if status == 429 else None,
            )
        body = _json(response)
        if status >= 300:
            code = _error_code(body, secret)
            raise PermanentError(
                f"{what}: token endpoint {endpoint} answered {status}"
                + (f" ({code})" if code else "")
            )
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise PermanentError(f"{what}: token endpoint {endpoint} sent no access_token")
        token_type = body.get("token_type", "bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise PermanentError(f"{what}: token endpoint {endpoint} sent a non-bearer token")
        return token, _lifetime(body.get("expires_in"))


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error_code(body: dict[str, Any], secret: str) -> str:
    """The RFC 6749 §5.2 `error` code, if it looks like one (never a description: servers
    may echo what they were sent)."""
    code = body.get("error")
    if not isinstance(code, str) or len(code) > MAX_ERROR_CODE or secret in code:
        return ""
    return code if all(c.isalnum() or c in "_-." for c in code) else ""


def _lifetime(expires_in: Any) -> float:
    try:
        seconds = float(expires_in)
    except (TypeError, ValueError):
        return DEFAULT_LIFETIME_S
    return min(seconds, MAX_LIFETIME_S) if seconds > 0 else DEFAULT_LIFETIME_S
