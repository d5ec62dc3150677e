"""`notify`: post a message to a webhook: a Slack-compatible payload (`text` and
`blocks`) by default, or a generic JSON object. The URL is secret (a webhook URL is a
credential): it never appears in events, errors or logs; failures name "the webhook".
5xx, 429 and connection failures are transient, other statuses permanent.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from karma.breakers import BREAKERS
from karma.errors import PermanentError, TransientError
from karma.executor import ActionContext, ActionResult, BaseActionExecutor
from karma.http_calls import retry_after, send
from karma.meta import ActionMeta, OutputDefinition, ParamDefinition, ParamType, RetryPolicy
from karma.registry import register_action

META = ActionMeta(
    type="notify",
    name="Notify a webhook",
    description="Posts a message to a webhook (Slack-compatible by default).",
    category="integration",
    icon="bell",
    timeout=timedelta(minutes=1),
    params=(
        ParamDefinition(name="url", type=ParamType.STRING, required=True, secret=True),
        ParamDefinition(name="text", type=ParamType.STRING, required=True),
        ParamDefinition(name="title", type=ParamType.STRING, default=""),
        ParamDefinition(
            name="format", type=ParamType.SELECT, options=("slack", "json"), default="slack"
        ),
        ParamDefinition(name="fields", type=ParamType.JSON, description="name -> value"),
        ParamDefinition(name="timeout_seconds", type=ParamType.NUMBER, default=10, min=0.1, max=60),
    ),
    outputs=(OutputDefinition(name="status_code", type=ParamType.NUMBER),),
    retry=RetryPolicy(max_attempts=4),
)


def payload(ctx: ActionContext) -> dict[str, Any]:
    params = ctx.params
    fields = params.get("fields") or {}
    if not isinstance(fields, dict):
        raise PermanentError("fields: an object of name -> value")
    title, text = str(params.get("title") or ""), str(params["text"])
    if params["format"] == "json":
        return {
            "title": title, "text": text, "fields": fields,
            "action_id": ctx.action_id, "entity_id": ctx.entity_id,
        }  # fmt: skip
    blocks: list[dict[str, Any]] = []
    if title:
        blocks.append({"type": "header", "text": {"type": "plain_text", "text": title[:150]}})
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}})
    if fields:
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in list(fields.items())[:10]
                ],
            }
        )
    return {"text": f"{title}: {text}" if title else text, "blocks": blocks}


@register_action(META)
class NotifyExecutor(BaseActionExecutor):
    async def execute(self, ctx: ActionContext) -> ActionResult:
        url = str(ctx.params["url"])
        body = payload(ctx)
        async with BREAKERS.guard(url):
            try:
                response = await send(
                    "POST", url, timeout=float(ctx.params["timeout_seconds"]), json_body=body
                )
            except TransientError as exc:  # its message holds the URL: a credential
                raise TransientError(
                    f"the webhook could not be reached ({exc.__cause__!r})"[:300]
                ) from None
            except PermanentError:
                raise PermanentError("the webhook URL is not valid") from None
            status = response.status_code
            if status == 429:
                raise TransientError("the webhook answered 429", retry_after=retry_after(response))
            if status >= 500:
                raise TransientError(f"the webhook answered {status}")
            if not 200 <= status < 300:
                raise PermanentError(f"the webhook answered {status}")
        return ActionResult(outputs={"status_code": status})
