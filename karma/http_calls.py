"""HTTP calls made by executors, with failures classified the Karma way.

Connection errors, timeouts, 5xx and 429 (honouring `Retry-After`) are transient; an invalid
URL and any other unexpected status are permanent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from karma.errors import LocalTransientError, PermanentError, TransientError

MAX_TEXT_BODY = 4096


async def send(
    method: str,
    url: str,
    *,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    json_body: Any = None,
    query: Mapping[str, Any] | None = None,
    client: httpx.AsyncClient | None = None,
) -> httpx.Response:
    """Send one request (through `client`, a shared pool, when given); transport failures
    become Karma errors."""
    kwargs: dict[str, Any] = {"headers": dict(headers or {}), "params": dict(query or {})}
    if json_body is not None:
        kwargs["json"] = json_body
    try:
        if client is not None:
            return await client.request(method, url, timeout=timeout, **kwargs)
        async with httpx.AsyncClient(timeout=timeout) as fresh:
            return await fresh.request(method, url, **kwargs)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise PermanentError(f"url {url!r}: {exc}") from exc
    except httpx.PoolTimeout as exc:
        raise LocalTransientError(f"no free connection to call {method} {url}: {exc}") from exc
    except httpx.TransportError as exc:
        raise TransientError(f"{type(exc).__name__} calling {method} {url}: {exc}") from exc


def check_status(response: httpx.Response, expected: int | None = None) -> None:
    """Raise unless the status is `expected` (any 2xx when None)."""
    status = response.status_code
    if (status == expected) if expected is not None else (200 <= status < 300):
        return
    summary = f"{response.request.method} {response.request.url} answered {status}"
    if status == 429:
        raise TransientError(summary, retry_after=retry_after(response))
    if status >= 500:
        raise TransientError(summary)
    wanted = f"expected {expected}" if expected is not None else "expected 2xx"
    raise PermanentError(f"{summary}, {wanted}")


def body_of(response: httpx.Response) -> Any:
    """The JSON body, or the text (truncated) when it is not JSON."""
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text[:MAX_TEXT_BODY]


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or HTTP date), if usable."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
