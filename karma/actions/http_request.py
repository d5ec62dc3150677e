"""`http_request`: call an HTTP endpoint and check the status.

Connection errors, timeouts and 5xx are transient; 429 is transient and honours
`Retry-After`; any other unexpected status is permanent. `headers` is secret because it
usually carries credentials. Better: `credential` names a stored credential (`karma
credentials set`) whose scope is the URL's host name; its value (an OAuth 2.0 client's
current access token) is sent as `Authorization: Bearer ...` and appears nowhere else.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from karma.breakers import BREAKERS
from karma.errors import PermanentError
from karma.executor import ActionContext, ActionResult, BaseActionExecutor
from karma.http_calls import body_of, check_status, send
from karma.meta import ActionMeta, OutputDefinition, ParamDefinition, ParamType, RetryPolicy
from karma.registry import register_action

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
            name="credential",
            type=ParamType.STRING,
            description="id of a stored credential for the URL's host (scope = host name, "
            "no port), sent as `Authorization: Bearer <value>`",
        ),
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
        headers = {str(k): str(v) for k, v in headers.items()}
        if params.get("credential"):
            if any(name.lower() == "authorization" for name in headers):
                raise PermanentError("give either params.credential or an Authorization header")
            headers["Authorization"] = await _bearer(ctx, params["credential"], params["url"])
        async with BREAKERS.guard(params["url"]):
            response = await send(
                params["method"],
                params["url"],
                timeout=float(params["timeout_seconds"]),
                headers=headers,
                json_body=params.get("body"),
            )
            check_status(response, int(params["expected_status"]))
        return ActionResult(
            outputs={
                "status_code": response.status_code,
                "body": body_of(response),
                "elapsed_ms": int(response.elapsed.total_seconds() * 1000),
            }
        )


async def _bearer(ctx: ActionContext, credential_id: str, url: str) -> str:
    """`Bearer <value>` of the credential stored for the URL's host (never another's)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        host = None
    if not host:
        raise PermanentError(f"params.url {url!r}: no host to look credential {credential_id!r} up")
    return f"Bearer {await ctx.credential(credential_id, host)}"
