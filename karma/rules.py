"""Rules: from a deviation (or an observation) to an action, guarded.

A rules file (YAML) holds `rules:`, each with `when` (what it matches), `then` (the action
it requests, its params templated from the matched event with Jinja2's sandbox) and
`guards` (deduplication window, rate limits, cooldown, actions in flight), plus
`require_approval` and `mode: dry-run`. `karma rules schema` prints its JSON Schema.

This module is pure: matching, rendering and the deduplication key. The engine that
applies the guards and requests actions is `bridge.rule_engine`.
"""

from __future__ import annotations

import fnmatch
import hashlib
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from jinja2 import TemplateError
from limits import parse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from karma.envelope import Envelope, Name
from karma.errors import FieldError, ValidationError, field_errors
from karma.templates import SANDBOX, render
from karma.yaml_input import load_mapping

MAX_RENDERED_CHARS = 4096
DEVIATION_EVENT = "entropy.deviation"
SCHEDULED_EVENT = "rule.scheduled"  # what a schedule trigger's firing looks like to a rule


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviationMatch(_Strict):
    metric: list[str] = Field(default_factory=list, description="any of these (empty: any)")
    entity: str = Field(default="*", description="a glob over the entity id")
    step: str = Field(default="*", description="a glob over the step")
    min_surprise_bits: float = Field(default=0.0, ge=0)


class ObservationMatch(_Strict):
    event_type: str = Field(default="*", description="a glob over the event type")
    entity: str = Field(default="*", description="a glob over the entity id")
    attrs: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="attributes that must be equal"
    )


class ScheduleTrigger(_Strict):
    cron: str = Field(description="a cron expression (UTC), as Temporal Schedules take it")

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        fields = value.split()
        if len(fields) not in (5, 6, 7) and not value.startswith("@"):
            raise ValueError("a cron expression has 5 fields: minute hour day month weekday")
        return value


class When(_Strict):
    deviation: DeviationMatch | None = None
    observation: ObservationMatch | None = None
    schedule: ScheduleTrigger | None = Field(
        default=None, description="fire on a schedule (a Temporal Schedule) instead of an event"
    )

    @model_validator(mode="after")
    def _one(self) -> When:
        given = [x for x in (self.deviation, self.observation, self.schedule) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of deviation, observation or schedule")
        return self


class Then(_Strict):
    action: Name = Field(description="a registered action type")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="string values are Jinja2 templates over `event` (the matched envelope)",
    )
    tags: dict[str, str] = Field(default_factory=dict)


class Guards(_Strict):
    dedup_window_s: int = Field(
        default=3600, ge=1, description="one action per rule, entity and window of this length"
    )
    rate_limit: str | None = Field(default="20/hour", description="per rule, e.g. 5/minute")
    entity_rate_limit: str | None = Field(default="3/hour", description="per rule and entity")
    cooldown_s: int = Field(default=0, ge=0, description="after an action on the same entity")
    max_in_flight: int = Field(default=10, ge=1, description="this rule's unfinished actions")

    @field_validator("rate_limit", "entity_rate_limit")
    @classmethod
    def _limit(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse(value)
            except ValueError as exc:
                raise ValueError(f"not a rate limit like 5/minute or 10 per hour: {exc}") from exc
        return value


class Rule(_Strict):
    name: Name
    description: str = ""
    when: When
    then: Then
    guards: Guards = Field(default_factory=Guards)
    require_approval: bool = Field(
        default=False,
        description="the action waits for an operator's decision (its type must be interactive)",
    )
    mode: Literal["live", "dry-run"] = "live"

    @property
    def kind(self) -> str:
        """What triggers it: deviation, observation or schedule."""
        if self.when.schedule is not None:
            return "schedule"
        return "deviation" if self.when.deviation is not None else "observation"

    def matches(self, event: Envelope) -> bool:
        if self.when.schedule is not None:
            return event.event_type == SCHEDULED_EVENT and event.attrs.get("rule") == self.name
        if self.when.deviation is not None:
            m = self.when.deviation
            attrs = event.attrs
            return (
                event.event_type == DEVIATION_EVENT
                and (not m.metric or attrs.get("metric") in m.metric)
                and fnmatch.fnmatchcase(event.entity_id, m.entity)
                and fnmatch.fnmatchcase(str(attrs.get("step", "")), m.step)
                and float(attrs.get("surprise_bits", 0.0)) >= m.min_surprise_bits
            )
        o = self.when.observation
        assert o is not None
        return (
            event.event_type not in (DEVIATION_EVENT, SCHEDULED_EVENT)
            and fnmatch.fnmatchcase(event.event_type, o.event_type)
            and fnmatch.fnmatchcase(event.entity_id, o.entity)
            and all(event.attrs.get(k) == v for k, v in o.attrs.items())
        )

    def params_for(self, event: Envelope) -> dict[str, Any]:
        """`then.params` with every string rendered against the event.

        Raises:
            karma.errors.ValidationError: a template that fails (an unknown name, too long).
        """
        context = {"event": event.model_dump(mode="json")}
        return {k: _render(self.name, k, v, context) for k, v in self.then.params.items()}

    def dedup_key(self, event: Envelope) -> str:
        """The action's idempotency key: one per rule, entity and dedup window."""
        window = int(event.ts.timestamp()) // self.guards.dedup_window_s
        raw = f"{self.name}\x1f{event.entity_id}\x1f{window}"
        return "rule-" + hashlib.sha256(raw.encode()).hexdigest()[:32]


def _render(rule: str, name: str, value: Any, context: dict[str, Any]) -> Any:
    if not isinstance(value, str):
        return value
    return render(f"{rule}.then.params.{name}", value, context, MAX_RENDERED_CHARS)


class RuleSet(_Strict):
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> RuleSet:
        names = [r.name for r in self.rules]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"rule names must be unique: {', '.join(twice)}")
        return self

    def matching(self, event: Envelope) -> list[Rule]:
        return [r for r in self.rules if r.matches(event)]

    @property
    def scheduled(self) -> list[Rule]:
        return [r for r in self.rules if r.when.schedule is not None]


def scheduled_event(rule: str, at: datetime) -> Envelope:
    """The event a schedule trigger's firing at `at` gives its rule (its id: the firing)."""
    raw = f"{rule}\x1f{at.isoformat()}"
    return Envelope(
        event_id="sched_" + hashlib.sha256(raw.encode()).hexdigest()[:32],
        ts=at,
        event_type=SCHEDULED_EVENT,
        entity_id=rule,
        attrs={"rule": rule, "scheduled_at": at.isoformat()},
    )


def parse_rules(text: str, source: str = "rules") -> RuleSet:
    """A rule set from YAML text.

    Raises:
        karma.errors.ValidationError: naming each field (rules.0.then.action) and reason,
            or the line and column YAML stopped at; templates that do not compile.
    """
    document = load_mapping(text, source, "a mapping with rules")
    try:
        rules = RuleSet.model_validate(document)
    except PydanticValidationError as exc:
        raise ValidationError(field_errors(exc)) from exc
    errors = []
    for index, rule in enumerate(rules.rules):
        for key, value in rule.then.params.items():
            if isinstance(value, str):
                try:
                    SANDBOX.parse(value)
                except TemplateError as exc:
                    field = f"rules.{index}.then.params.{key}"
                    errors.append(FieldError(field=field, reason=f"template: {exc}"))
    if errors:
        raise ValidationError(errors)
    return rules


def load_rules(path: Path) -> RuleSet:
    return parse_rules(path.read_text(encoding="utf-8"), str(path))


def check_actions(rules: RuleSet, registry: Any) -> None:
    """Raise unless every rule's action is registered, and interactive where the rule
    requires approval (an action that would not wait must not be called awaiting).

    Raises:
        karma.errors.ValidationError: naming each rule's field.
    """
    errors = []
    for index, rule in enumerate(rules.rules):
        field = f"rules.{index}.then.action"
        if rule.then.action not in registry:
            errors.append(
                FieldError(field=field, reason=f"unknown action type {rule.then.action!r}")
            )
            continue
        mode = registry.meta(rule.then.action).mode.value
        if rule.require_approval and mode != "interactive":
            reason = f"require_approval needs an interactive action; {rule.then.action} is {mode}"
            errors.append(FieldError(field=field, reason=reason))
    if errors:
        raise ValidationError(errors)


def rules_schema() -> dict[str, Any]:
    return RuleSet.model_json_schema()
