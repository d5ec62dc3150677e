"""Text rendering for the command line: transitions, statuses, the action catalogue."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from karma.envelope import Transition
from karma.errors import ErrorInfo
from karma.meta import ActionMeta, ParamType
from karma.status import ActionStatus


def event_detail(event_type: str, attrs: dict[str, Any]) -> str:
    """The one-line gist of a transition's attrs."""
    parts: list[str] = []
    if "step" in attrs:
        parts.append(
            f"step {attrs['step']}" + (f" {attrs['outcome']}" if "outcome" in attrs else "")
        )
    decision = attrs.get("decision")
    if decision:
        parts.append(f"{decision.get('verdict')} by {decision.get('by')}: {decision.get('reason')}")
    if "decision_request" in attrs:
        parts.append(f"asks {_compact(attrs['decision_request'])}")
    if attrs.get("reason"):
        parts.append(f"reason: {attrs['reason']}")
    if "attempt" in attrs:
        parts.append(f"attempt {attrs['attempt']}")
    error = attrs.get("error")
    if error:
        parts.append(f"{error.get('type')}: {error.get('message')}")
    if "percent" in attrs:
        parts.append(f"{attrs['percent']:g}%")
    if attrs.get("message"):
        parts.append(str(attrs["message"]))
    if attrs.get("undone"):
        parts.append(f"not undone: {', '.join(attrs['undone'])}")
    if "external_workflow_id" in attrs:
        parts.append(f"waiting on {attrs['external_workflow_id']}")
    if "timeout_ms" in attrs:
        parts.append(f"for at most {attrs['timeout_ms'] / 1000:g}s")
    if "retry_in_ms" in attrs:
        parts.append(f"retry in {attrs['retry_in_ms'] / 1000:g}s")
    if event_type.endswith("succeeded") and attrs.get("outputs"):
        parts.append(f"outputs {_compact(attrs['outputs'])}")
    if event_type.endswith(("requested", "accepted")) and "args" in attrs:
        parts.append(f"args {_compact(attrs['args'])}")
    if "duration_ms" in attrs:
        parts.append(f"{attrs['duration_ms']} ms")
    return ", ".join(parts)


def transition_line(event: Transition) -> str:
    return ledger_line(event.seq, event.ts, event.event_type.value, event.attrs)


def ledger_line(seq: int, ts: datetime, event_type: str, attrs: dict[str, Any]) -> str:
    """One transition on one line: seq, time, type and the gist of its attrs."""
    clock = ts.strftime("%H:%M:%S.") + f"{ts.microsecond // 1000:03d}"
    detail = event_detail(event_type, attrs)
    return f"  #{seq:<3} {clock}  {event_type:<23} {detail}".rstrip()


def status_text(status: ActionStatus) -> str:
    lines = [
        f"action   {status.action_id}",
        f"type     {status.action_type}",
        f"state    {status.state}",
        f"attempt  {status.attempt}",
    ]
    if status.from_ledger:
        lines.append("note     answered from the ledger: the action ran before and Temporal no")
        lines.append("         longer holds its workflow (retention)")
    if status.external_workflow_id:
        lines.append(f"waits on {status.external_workflow_id}")
    if status.pending_callbacks:
        lines.append(f"events   {status.pending_callbacks} buffered, not yet judged")
    if status.decision_request is not None and status.decision is None:
        lines.append(f"asks     {_compact(status.decision_request)}  (karma approve|reject)")
    if status.decision is not None:
        d = status.decision
        lines.append(f"decision {d.verdict.value} by {d.by}: {d.reason}")
    if status.compensated_steps:
        lines.append(f"undone   {', '.join(status.compensated_steps)}")
    if status.outputs:
        lines.append(f"outputs  {_compact(status.outputs)}")
    if status.error is not None:
        lines.append(f"error    {error_text(status.error)}")
    lines.append(f"emitted  up to seq {status.emitted_seq} of {len(status.transitions)}")
    lines.append("transitions:")
    lines.extend(transition_line(e) for e in status.transitions)
    return "\n".join(lines)


def error_text(error: ErrorInfo) -> str:
    return f"{error.type}: {error.message}"


def catalogue(metas: list[ActionMeta]) -> str:
    width = max((len(m.type) for m in metas), default=4)
    lines = [f"{'TYPE':<{width}}  {'MODE':<13} {'CATEGORY':<12} NAME"]
    lines += [f"{m.type:<{width}}  {m.mode.value:<13} {m.category:<12} {m.name}" for m in metas]
    for meta in metas:
        lines += ["", *action_text(meta)]
    return "\n".join(lines)


def action_text(meta: ActionMeta) -> list[str]:
    retry = meta.retry
    lines = [
        f"{meta.type} (v{meta.version}): {meta.description or meta.name}",
        f"  timeout {meta.timeout.total_seconds():g}s per attempt; up to {retry.max_attempts} "
        f"attempts, backoff {retry.initial_interval.total_seconds():g}s x"
        f"{retry.backoff_coefficient:g} (max {retry.maximum_interval.total_seconds():g}s)",
    ]
    if meta.params:
        lines.append(f"  {'PARAM':<18} {'TYPE':<12} {'REQUIRED':<9} {'DEFAULT':<10} NOTES")
    for p in meta.params:
        notes = [p.description] if p.description else []
        if p.options:
            notes.append("one of " + "|".join(p.options))
        if p.min is not None or p.max is not None:
            notes.append(_range(p.min, p.max))
        if p.ref_kind:
            notes.append(f"a {p.ref_kind} (name or id; checked, then its id)")
        if p.type is ParamType.TEMPLATE:
            notes.append("Jinja2, rendered before acceptance")
        if p.secret:
            notes.append("secret (redacted from events)")
        default = "" if p.default is None else json.dumps(p.default)
        lines.append(
            f"  {p.name:<18} {p.type.value:<12} {'yes' if p.required else 'no':<9} "
            f"{default:<10} {'; '.join(notes)}".rstrip()
        )
    if meta.outputs:
        lines.append("  outputs: " + ", ".join(f"{o.name} ({o.type.value})" for o in meta.outputs))
    return lines


def _range(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"{_number(low)} to {_number(high)}"
    return f">= {_number(low)}" if low is not None else f"<= {_number(high)}"


def _number(value: float | None) -> str:
    """1048576, not 1.04858e+06; 0.1 stays 0.1."""
    if value is not None and float(value).is_integer():
        return str(int(value))
    return f"{value:g}"


def _compact(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"
