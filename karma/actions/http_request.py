"""`http_request`: call an HTTP endpoint and check the status.

Connection errors, timeouts and 5xx are transient; 429 is transient and honours
`Retry-After`; any other unexpected status is permanent. `headers` is secret because it
usually carries credentials.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from karma.errors import PermanentError, TransientError
from karma.executor import ActionContext, ActionResult, BaseActionExecutor
from karma.meta import ActionMeta, OutputDefinition, ParamDefinition, ParamType, RetryPolicy
from karma.registry import register_action

MAX_BODY_CHARS = 4096

META = ActionMeta(
    type="http_request",
    name="HTTP request",
    description="Sends an HTTP request and succeeds when the response has the expected status.",
    category="integration",
    icon="globe",
    timeout=timedelta(minutes=2),
    params=(
        ParamDefinition(
            name="method",
            type=ParamType.SELECT,
            options=("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"),
            default="GET",
        ),
        ParamDefinition(name="url", type=ParamType.STRING, required=True),
        ParamDefinition(
            name="headers", type=ParamType.JSON, secret=True, description="object of header values"
        ),
        ParamDefinition(name="body", type=ParamType.JSON, description="JSON request body"),
        ParamDefinition(
            name="expected_status", type=ParamType.NUMBER, default=200, min=100, max=599
        ),
        ParamDefinition(
            name="timeout_seconds", type=ParamType.NUMBER, default=30, min=0.1, max=600
        ),
    ),
    outputs=(
        OutputDefinition(name="status_code", type=ParamType.NUMBER),
        OutputDefinition(name="body", type=ParamType.JSON),
        OutputDefinition(name="elapsed_ms", type=ParamType.NUMBER),
    ),
    retry=RetryPolicy(max_attempts=4),
)


@register_action(META)
class HttpRequestExecutor(BaseActionExecutor):
    async def execute(self, ctx: ActionContext) -> ActionResult:
        params = ctx.params
        headers = params.get("headers") or {}
        if not isinstance(headers, dict):
            raise PermanentError("params.headers: must be an object of header values")
        request_kwargs: dict[str, Any] = {"headers": {str(k): str(v) for k, v in headers.items()}}
        if params.get("body") is not None:
            request_kwargs["json"] = params["body"]
        try:
            async with httpx.AsyncClient(timeout=float(params["timeout_seconds"])) as client:
                response = await client.request(params["method"], params["url"], **request_kwargs)
        except httpx.InvalidURL as exc:
            raise PermanentError(f"params.url: {exc}") from exc
        except httpx.UnsupportedProtocol as exc:
            raise PermanentError(f"params.url: {exc}") from exc
        except httpx.TransportError as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        return _check(response, int(params["expected_status"]))


def _check(response: httpx.Response, expected: int) -> ActionResult:
    status = response.status_code
    summary = f"{response.request.method} {response.request.url} answered {status}"
    if status == expected:
        return ActionResult(
            outputs={
                "status_code": status,
                "body": _body(response),
                "elapsed_ms": int(response.elapsed.total_seconds() * 1000),
            }
        )
    if status == 429:
        raise TransientError(summary, retry_after=_retry_after(response))
    if status >= 500:
        raise TransientError(summary)
    raise PermanentError(f"{summary}, expected {expected}")


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text[:MAX_BODY_CHARS]


def _retry_after(response: httpx.Response) -> float | None:
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
