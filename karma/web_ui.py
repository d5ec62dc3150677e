"""What the Temporal Web UI shows of an action: a summary line and details (Markdown) fixed
at the start, and current details that follow it. Values from outside are put in code spans
they cannot end, and every text is cut to what Temporal accepts."""

from __future__ import annotations

from karma.envelope import Transition
from karma.lifecycle import ActionState
from karma.request import ActionRequest

SUMMARY_BYTES = 250  # Temporal refuses a summary over 400 bytes (the codec adds ~90)
DETAILS_BYTES = 8000  # and details over 20,000
FREE_TEXT_CHARS = 200  # of a message, reason or error in the current details


def capped(text: str, limit: int) -> str:
    """`text` cut to `limit` UTF-8 bytes (never inside a character)."""
    return text.encode()[:limit].decode(errors="ignore")


def code(value: str) -> str:
    """A value as a Markdown code span that nothing in it can end (no link, no heading)."""
    return "`" + " ".join(value.replace("`", "'").split()) + "`"


def summary(request: ActionRequest) -> str:
    """The one line the Web UI's workflow list shows for the action."""
    tenant = f"[{request.tenant}]" if request.tenant else ""
    line = " ".join(p for p in (request.action_type, request.entity_id, tenant) if p)
    return capped(" ".join(line.split()), SUMMARY_BYTES)


def details(request: ActionRequest) -> str:
    """What the Web UI's workflow page says the action is (Markdown; no parameter values:
    they may be secret)."""
    rows = [
        ("action", request.action_id),
        ("type", request.action_type),
        ("entity", request.entity_id),
        ("tenant", request.tenant),
        ("correlation", request.correlation_id),
        ("idempotency key", request.idempotency_key),
        ("priority", request.priority),
        ("parameters", ", ".join(sorted(request.params)) or "none"),
    ]
    text = "\n".join(f"- **{name}**: {code(value)}" for name, value in rows if value)
    return capped(text, DETAILS_BYTES)


def current_details(transition: Transition, state: ActionState) -> str:
    """The state and the latest transition: attempt, progress, step, message, error."""
    attrs = transition.attrs
    parts = [f"**{state.value}**", f"{transition.event_type.value} (#{transition.seq})"]
    if attrs.get("attempt"):
        parts.append(f"attempt {attrs['attempt']}")
    if isinstance(attrs.get("percent"), int | float):
        parts.append(f"{attrs['percent']:g} %")
    for key in ("step", "message", "reason"):
        if attrs.get(key):
            parts.append(code(str(attrs[key])[:FREE_TEXT_CHARS]))
    error = attrs.get("error")
    if isinstance(error, dict) and error.get("message"):
        text = f"{error.get('type', 'error')}: {error['message']}"
        parts.append(code(text[:FREE_TEXT_CHARS]))
    return capped(" · ".join(parts), DETAILS_BYTES)
