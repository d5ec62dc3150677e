"""Who is calling: an API key (`Authorization: Bearer`, `X-API-Key`, or the console's
session cookie), its scopes, its tenant, and its rate limit (the `limits` library's moving
window, per key)."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request, Security
from fastapi.security import APIKeyCookie, APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from karma.api.keys import ApiKey, KeyStore, Scope, Sessions
from karma.api.problems import Problem
from karma.errors import FieldError
from karma.settings import Settings

COOKIE = "karma_session"
CONSOLE_HEADER = "X-Karma-Console"  # cookie-authenticated changes must carry it (no CSRF)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_bearer = HTTPBearer(auto_error=False, description="an API key (`karma api-key create`)")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key")
_cookie = APIKeyCookie(name=COOKIE, auto_error=False, description="the console's session")


@dataclass(frozen=True)
class Caller:
    key_id: str
    name: str
    scopes: tuple[Scope, ...]
    tenant: str  # "" = every tenant

    def sees(self, tenant: str) -> bool:
        return not self.tenant or tenant == self.tenant

    def tenant_for(self, requested: str) -> str:
        """The tenant a request is made for: the key's own when it is bound to one.

        Raises:
            Problem: 403, another tenant than the key's.
        """
        if not self.tenant:
            return requested
        if requested and requested != self.tenant:
            reason = f"the key is bound to tenant {self.tenant!r}"
            raise Problem(403, reason, [FieldError(field="tenant", reason=reason)])
        return self.tenant


def idempotency_key_of(in_body: str, in_header: str | None) -> str:
    """The one idempotency key of a request (the body's or the `Idempotency-Key` header).

    Raises:
        Problem: 422, both given and different.
    """
    if in_header is None:
        return in_body
    if in_body and in_body != in_header:
        reason = "differs from the Idempotency-Key header"
        raise Problem(422, reason, [FieldError(field="idempotency_key", reason=reason)])
    return in_header


ANONYMOUS = Caller(key_id="", name="anonymous", scopes=(Scope.ADMIN,), tenant="")


class Guard:
    """Checks keys against the store and counts each key's requests."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.api.auth
        self.store = KeyStore.of(settings)
        self.sessions = Sessions(self.store)
        self.limit: RateLimitItem = parse(settings.api.rate_limit)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def caller(self, token: str) -> Caller | None:
        """The caller an API key is."""
        return caller_of(self.store.verify(token))

    def session_caller(self, session: str) -> Caller | None:
        """The caller a console session is."""
        return caller_of(self.sessions.verify(session))

    async def count(self, caller: Caller) -> None:
        """Raises a 429 problem with `Retry-After` when the key is over its rate."""
        if await self._limiter.hit(self.limit, caller.key_id):
            return
        stats = await self._limiter.get_window_stats(self.limit, caller.key_id)
        retry = max(1, math.ceil(stats.reset_time - time.time()))
        raise Problem(
            429,
            f"key {caller.key_id} is over its rate limit ({self.limit})",
            headers={"Retry-After": str(retry)},
        )

    async def authenticate(
        self,
        request: Request,
        scope: Scope | None,
        token: str | None,
        cookie: str | None,
        *,
        cookie_changes: bool = False,
    ) -> Caller:
        """The caller of a request with this key (or the console's cookie: for a change,
        only with the console's header, unless `cookie_changes`); raises the problem (401,
        403, 429) otherwise."""
        if not self.enabled:
            return ANONYMOUS
        if token is None and cookie is not None:
            unsafe = request.method not in SAFE_METHODS and not cookie_changes
            if unsafe and request.headers.get(CONSOLE_HEADER) != "1":
                reason = f"a change made with the session cookie must carry {CONSOLE_HEADER}: 1"
                raise Problem(403, reason, [FieldError(field=CONSOLE_HEADER, reason=reason)])
            caller = self.session_caller(cookie)
            if caller is None:
                raise unauthorized("the session has ended (expired, logged out or key revoked)")
        elif token is None:
            raise unauthorized("an API key is required (Authorization: Bearer <key>)")
        else:
            caller = self.caller(token)
            if caller is None:
                raise unauthorized("the API key is not valid (unknown, malformed or revoked)")
        if scope is not None and scope not in caller.scopes and Scope.ADMIN not in caller.scopes:
            raise Problem(403, f"the key {caller.key_id} lacks the {scope.value!r} scope")
        await self.count(caller)
        return caller

    async def authenticate_request(
        self, request: Request, scope: Scope | None, *, cookie_changes: bool = False
    ) -> Caller:
        """As `authenticate`, with the key read from the request's headers or cookie."""
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        token = credentials if scheme.lower() == "bearer" and credentials else None
        token = token or request.headers.get("x-api-key")
        cookie = request.cookies.get(COOKIE)
        return await self.authenticate(request, scope, token, cookie, cookie_changes=cookie_changes)


def caller_of(key: ApiKey | None) -> Caller | None:
    if key is None:
        return None
    return Caller(key_id=key.id, name=key.name, scopes=tuple(key.scopes), tenant=key.tenant)


def unauthorized(detail: str) -> Problem:
    return Problem(401, detail, headers={"WWW-Authenticate": 'Bearer realm="karma"'})


def requires(guard: Guard, scope: Scope | None) -> Callable[..., Awaitable[Caller]]:
    """A dependency: the caller, when its key is valid, has `scope` (None: any key), and is
    within its rate."""

    async def dependency(
        request: Request,
        bearer: HTTPAuthorizationCredentials | None = Security(_bearer),  # noqa: B008
        header: str | None = Security(_header),
        cookie: str | None = Security(_cookie),
    ) -> Caller:
        token = bearer.credentials if bearer is not None else header
        return await guard.authenticate(request, scope, token, cookie)

    return dependency
