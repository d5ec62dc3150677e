"""The reference service's OAuth 2.0 side: a client-credentials token endpoint and a
resource that wants a current bearer token.

`POST /oauth/token` (RFC 6749 §4.4, client authenticated by HTTP Basic or by
`client_id`/`client_secret` in the form, §2.3.1) issues random opaque tokens that live
`lifetime_s` (short by default: tests watch them being refreshed); `GET /protected`
answers 200 `{"ok": true}` for a token that is still good and 401 otherwise. It counts the
tokens issued to each client and keeps them, so a test can check a refresh happened and
search for every token where it must not be.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote_plus

TOKEN_LIFETIME_S = 2.0

Reply = tuple[int, dict[str, Any]]


@dataclass(frozen=True)
class _Client:
    secret: str
    lifetime_s: float


class TokenIssuer:
    """Thread-safe: the reference service answers from several threads."""

    def __init__(
        self,
        clients: Mapping[str, str] | None = None,
        *,
        lifetime_s: float = TOKEN_LIFETIME_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._clients = {c: _Client(s, lifetime_s) for c, s in (clients or {}).items()}
        self._expiry: dict[str, float] = {}  # token -> when it stops working
        self.issued: dict[str, list[str]] = {}  # client id -> its tokens, in order

    def register(
        self, client_id: str, secret: str, *, lifetime_s: float = TOKEN_LIFETIME_S
    ) -> None:
        with self._lock:
            self._clients[client_id] = _Client(secret, lifetime_s)

    def valid(self, token: str) -> bool:
        with self._lock:
            return self._clock() < self._expiry.get(token, 0.0)

    def token(self, authorization: str | None, body: bytes) -> Reply:
        """Answer a token request."""
        form = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        client_id, secret = _basic(authorization) or (
            form.get("client_id", ""),
            form.get("client_secret", ""),
        )
        with self._lock:
            client = self._clients.get(client_id)
            if client is None or not hmac.compare_digest(client.secret.encode(), secret.encode()):
                return 401, {"error": "invalid_client"}
            token = secrets.token_urlsafe(24)
            self._expiry[token] = self._clock() + client.lifetime_s
            self.issued.setdefault(client_id, []).append(token)
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": client.lifetime_s}

    def protected(self, authorization: str | None) -> Reply:
        """Answer a request for the protected resource."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and self.valid(token.strip()):
            return 200, {"ok": True}
        return 401, {"error": "invalid_token"}


def _basic(authorization: str | None) -> tuple[str, str] | None:
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        pair = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = pair.partition(":")
    return (unquote_plus(client_id), unquote_plus(secret)) if sep else None
