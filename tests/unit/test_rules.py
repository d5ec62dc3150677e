"""Rules files: validation that names the field, matching, templating in a sandbox, and
the deduplication key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from karma.envelope import Envelope
from karma.errors import ValidationError
from karma.rules import parse_rules, scheduled_event

RULES = """
rules:
  - name: slow-supplier
    when:
      deviation: {metric: [latency_shift], entity: "supplier-*", min_surprise_bits: 30}
    then:
      action: demo.approval
      params: {change: "notify {{ event.entity_id }}: {{ event.attrs.metric }}"}
    guards: {dedup_window_s: 3600, entity_rate_limit: 1/hour}
    require_approval: true
  - name: failed-deploys
    mode: dry-run
    when:
      observation: {event_type: "deploy.*", attrs: {status: failed}}
    then: {action: log, params: {message: "{{ event.correlation_id }}"}}
"""

AT = datetime(2026, 11, 25, 10, 30, tzinfo=UTC)


def deviation(entity: str = "supplier-7", bits: float = 42.0, metric: str = "latency_shift",
              at: datetime = AT) -> Envelope:  # fmt: skip
    return Envelope(
        event_id=f"dev_{entity}_{metric}",
        ts=at,
        event_type="entropy.deviation",
        entity_id=entity,
        attrs={"metric": metric, "step": "quote", "surprise_bits": bits},
    )


def test_rules_match_deviations_by_metric_entity_and_surprise() -> None:
    rules = parse_rules(RULES)
    assert [r.name for r in rules.matching(deviation())] == ["slow-supplier"]
    assert rules.matching(deviation(bits=29.9)) == []
    assert rules.matching(deviation(entity="warehouse-1")) == []
    assert rules.matching(deviation(metric="sequence_change")) == []


def test_rules_match_observations_by_type_and_attrs() -> None:
    rules = parse_rules(RULES)
    failed = Envelope(
        ts=AT, event_type="deploy.step", entity_id="web", correlation_id="deploy-9",
        attrs={"status": "failed"},
    )  # fmt: skip
    assert [r.name for r in rules.matching(failed)] == ["failed-deploys"]
    ok = failed.model_copy(update={"attrs": {"status": "ok"}})
    assert rules.matching(ok) == []
    assert rules.rules[1].params_for(failed) == {"message": "deploy-9"}


def test_params_are_rendered_from_the_event() -> None:
    rule = parse_rules(RULES).rules[0]
    assert rule.params_for(deviation()) == {"change": "notify supplier-7: latency_shift"}


def test_one_key_per_rule_entity_and_window() -> None:
    rule = parse_rules(RULES).rules[0]
    key = rule.dedup_key(deviation())
    assert key == rule.dedup_key(deviation(at=AT + timedelta(minutes=20)))  # same hour
    assert key != rule.dedup_key(deviation(at=AT + timedelta(hours=1)))
    assert key != rule.dedup_key(deviation(entity="supplier-8"))


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",  # the sandbox refuses internals
        "{{ event.no_such_field }}",  # strict: an unknown name is an error, not ""
        "{{ 'x' * 100000 }}",  # bounded output
    ],
)
def test_templates_that_cannot_render_are_refused_naming_the_param(template: str) -> None:
    text = RULES.replace("notify {{ event.entity_id }}: {{ event.attrs.metric }}", template)
    rule = parse_rules(text).rules[0]
    with pytest.raises(ValidationError) as caught:
        rule.params_for(deviation())
    assert caught.value.errors[0].field == "slow-supplier.then.params.change"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("rules: [{name: a, when: {}, then: {action: log}}]", "rules.0.when"),
        (
            "rules: [{name: a, when: {deviation: {}}, then: {action: log}, guards: "
            "{rate_limit: lots}}]",
            "rules.0.guards.rate_limit",
        ),
        ("rules: [{name: a, when: {deviation: {}}, then: {action: log, params: "
         "{m: '{{ oops'}}}]", "rules.0.then.params.m"),
        ("rules: [{name: a, when: {deviation: {}}, then: {action: log}, bogus: 1}]",
         "rules.0.bogus"),
        ("rules: [{name: a, when: {deviation: {}}, then: {action: log}}, "
         "{name: a, when: {deviation: {}}, then: {action: log}}]", ""),
        ("rules: [oops\n  - : :", "line"),
        ("- just a list", "rules"),
    ],
)  # fmt: skip
def test_a_bad_rules_file_names_the_field(text: str, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_rules(text)
    assert any(e.field.startswith(field) for e in caught.value.errors), caught.value.errors


def test_a_schedule_trigger_matches_only_its_own_firings() -> None:
    text = """
rules:
  - name: hourly
    when: {schedule: {cron: "0 * * * *"}}
    then: {action: log, params: {message: "{{ event.attrs.scheduled_at }}"}}
"""
    rules = parse_rules(text)
    firing = scheduled_event("hourly", AT)
    assert [r.name for r in rules.matching(firing)] == ["hourly"]
    assert rules.matching(scheduled_event("other", AT)) == []
    assert rules.matching(deviation()) == []
    assert rules.rules[0].params_for(firing) == {"message": AT.isoformat()}
    assert firing.event_id == scheduled_event("hourly", AT).event_id  # one id per firing
    with pytest.raises(ValidationError) as caught:
        parse_rules(text.replace("0 * * * *", "every hour"))
    assert caught.value.errors[0].field == "rules.0.when.schedule.cron"


def test_a_rules_file_that_expands_without_bound_is_refused() -> None:
    bomb = "a: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(6)
    )
    with pytest.raises(ValidationError) as caught:
        parse_rules(bomb)
    assert "more than" in caught.value.errors[0].reason
