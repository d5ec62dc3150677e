"""Checking a pipeline before anything runs, and planning it: waves, resolved params,
skipped steps, expected durations, and a hash that a saved plan is held to."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from simpleeval import EvalWithCompoundTypes

from karma.errors import FieldError, ValidationError
from karma.meta import ActionMeta
from karma.params import REDACTED
from karma.pipelines.spec import (
    REFERENCE,
    ExpressionError,
    PipelineSpec,
    Step,
    names_used,
    parse_expression,
    references,
    whole_reference,
)

ROOTS = ("params", "steps")


def _kahn(spec: PipelineSpec) -> list[str]:
    """The steps Kahn's algorithm can order, each after its needs (all of them unless
    there is a cycle)."""
    waiting = {s.id: len(set(s.needs)) for s in spec.steps}
    needed_by: dict[str, list[str]] = {s.id: [] for s in spec.steps}
    for s in spec.steps:
        for need in set(s.needs):
            needed_by[need].append(s.id)
    ready = [s.id for s in reversed(spec.steps) if waiting[s.id] == 0]
    order: list[str] = []
    while ready:
        step_id = ready.pop()
        order.append(step_id)
        for later in reversed(needed_by[step_id]):
            waiting[later] -= 1
            if waiting[later] == 0:
                ready.append(later)
    return order


def _order(spec: PipelineSpec) -> list[str] | None:
    """The steps in an order where each comes after its needs; None on a cycle."""
    order = _kahn(spec)
    return order if len(order) == len(spec.steps) else None


def ancestors(spec: PipelineSpec) -> dict[str, set[str]]:
    """Every step's transitive `needs` (of a spec without cycles: `check` first)."""
    out: dict[str, set[str]] = {}
    for step_id in _order(spec) or []:
        needs = spec.step(step_id).needs
        out[step_id] = set(needs).union(*(out[n] for n in needs))
    return out


def _cycle(spec: PipelineSpec) -> list[str] | None:
    """A cycle of `needs`, if there is one (walked without recursion)."""
    if _order(spec) is not None:
        return None
    # Follow needs among the steps Kahn could not order: every one of them has one.
    unordered = {s.id for s in spec.steps} - set(_kahn(spec))
    start = min(unordered)
    path: list[str] = []
    seen: dict[str, int] = {}
    current = start
    while current not in seen:
        seen[current] = len(path)
        path.append(current)
        current = next(n for n in spec.step(current).needs if n in unordered)
    return [*path[seen[current] :], current]


def check(spec: PipelineSpec, registry: Any) -> None:
    """Everything that can be known wrong before a run; every error names its step and
    field.

    Raises:
        karma.errors.ValidationError: cycles, unknown needs, unknown action types,
            unknown, missing or ill-typed params, references to params not declared, to
            steps that are not (transitive) dependencies or to outputs the action does not
            declare, conditions that do not parse.
    """
    errors: list[FieldError] = []
    ids = {s.id for s in spec.steps}
    for s in spec.steps:
        for need in s.needs:
            if need not in ids:
                errors.append(FieldError(field=f"steps.{s.id}.needs", reason=f"no step {need!r}"))
            elif need == s.id:
                errors.append(FieldError(field=f"steps.{s.id}.needs", reason="needs itself"))
    if errors:
        raise ValidationError(errors)
    cycle = _cycle(spec)
    if cycle:
        where = f"steps.{cycle[0]}.needs"
        raise ValidationError([FieldError(field=where, reason=f"cycle: {' -> '.join(cycle)}")])
    before = ancestors(spec)
    for s in spec.steps:
        if s.action not in registry:
            reason = f"unknown action type {s.action!r}"
            errors.append(FieldError(field=f"steps.{s.id}.action", reason=reason))
            continue
        meta: ActionMeta = registry.meta(s.action)
        errors += _param_errors(s, meta)
        for name, value in s.params.items():
            field = f"steps.{s.id}.params.{name}"
            for expression in references(value):
                errors += _reference_errors(spec, registry, before[s.id], field, expression)
            errors += _secret_errors(spec, meta, name, value, field)
        if s.if_ is not None:
            errors += _reference_errors(spec, registry, before[s.id], f"steps.{s.id}.if", s.if_)
            errors += _secret_condition(spec, s)
    if errors:
        raise ValidationError(errors)


def _secret_errors(
    spec: PipelineSpec, meta: ActionMeta, name: str, value: Any, field: str
) -> list[FieldError]:
    """A secret pipeline param travels sealed: only a secret param may take it, whole."""
    definition = meta.param(name)
    secret_param = definition is not None and definition.secret
    if secret_param and references(value) and whole_reference(value) is None:
        # Written values are sealed by the client; a reference's value is resolved on the
        # worker. Both in one value would leave the written part in clear.
        reason = "a secret param is written whole, or is exactly one ${{ ... }} reference"
        return [FieldError(field=field, reason=reason)]
    secret = {n for n, p in spec.params.items() if p.secret}
    read: set[str] = set()
    for expression in references(value):
        try:
            read |= {p[1] for p in names_used(expression) if len(p) > 1 and p[0] == "params"}
        except ExpressionError:
            return []  # reported as such
    if not read & secret:
        return []
    if whole_reference(value) is not None and definition is not None and definition.secret:
        return []
    reason = "a secret pipeline param is only given whole (${{ params.x }}) to a secret param"
    return [FieldError(field=field, reason=reason)]


def _secret_condition(spec: PipelineSpec, step: Step) -> list[FieldError]:
    """A condition never reads a secret param: it travels sealed, and a plan shows `***`."""
    assert step.if_ is not None
    secret = {n for n, p in spec.params.items() if p.secret}
    try:
        read = {p[1] for p in names_used(step.if_) if len(p) > 1 and p[0] == "params"}
    except ExpressionError:
        return []  # reported as such
    return [
        FieldError(field=f"steps.{step.id}.if", reason=f"params.{name} is secret")
        for name in sorted(read & secret)
    ]


def _param_errors(step: Step, meta: ActionMeta) -> list[FieldError]:
    errors = []
    known = {p.name: p for p in meta.params}
    for name, value in step.params.items():
        definition = known.get(name)
        field = f"steps.{step.id}.params.{name}"
        if definition is None:
            errors.append(FieldError(field=field, reason=f"{meta.type} has no parameter {name!r}"))
        elif not references(value) and (problem := definition.problem_with(value)):
            errors.append(FieldError(field=field, reason=problem))
    for name, definition in known.items():
        if definition.required and step.params.get(name) is None:
            field = f"steps.{step.id}.params.{name}"
            errors.append(FieldError(field=field, reason="required parameter is missing"))
    return errors


def _reference_errors(
    spec: PipelineSpec, registry: Any, before: set[str], field: str, expression: str
) -> list[FieldError]:
    try:
        used = names_used(expression)
    except ExpressionError as exc:
        return [FieldError(field=field, reason=f"{expression!r}: {exc}")]
    errors = []
    for parts in used:
        root = parts[0]
        if len(parts) == 1:
            reason = f"{root}: name what it reads (params.<name>, steps.<id>.outputs.<name>)"
            errors.append(FieldError(field=field, reason=reason))
        elif root not in ROOTS:
            reason = f"{'.'.join(parts)}: names start with params. or steps."
            errors.append(FieldError(field=field, reason=reason))
        elif root == "params" and (len(parts) < 2 or parts[1] not in spec.params):
            name = parts[1] if len(parts) > 1 else ""
            errors.append(FieldError(field=field, reason=f"no pipeline param {name!r}"))
        elif root == "steps":
            errors += _step_reference(spec, registry, before, field, parts)
    return errors


def _step_reference(
    spec: PipelineSpec, registry: Any, before: set[str], field: str, parts: tuple[str, ...]
) -> list[FieldError]:
    dotted = ".".join(parts)
    if len(parts) < 3 or parts[2] not in ("outputs", "state"):
        return [FieldError(field=field, reason=f"{dotted}: use steps.<id>.outputs.<name>")]
    step_id = parts[1]
    if step_id not in before:
        reason = f"{dotted}: {step_id!r} is not a step this one needs (directly or not)"
        return [FieldError(field=field, reason=reason)]
    if parts[2] == "outputs":
        action = spec.step(step_id).action
        if action in registry:
            outputs = {o.name for o in registry.meta(action).outputs}
            if len(parts) < 4 or parts[3] not in outputs:
                declared = ", ".join(sorted(outputs)) or "none"
                reason = f"{dotted}: {action} declares no such output (it has: {declared})"
                return [FieldError(field=field, reason=reason)]
    return []


def waves(spec: PipelineSpec) -> list[list[str]]:
    """Steps in waves: each wave's steps need only steps of earlier waves (spec order
    within a wave)."""
    depth: dict[str, int] = {}
    for step_id in _order(spec) or []:
        depth[step_id] = 1 + max((depth[n] for n in spec.step(step_id).needs), default=-1)
    out: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for s in spec.steps:
        out[depth[s.id]].append(s.id)
    return out


def pipeline_params(spec: PipelineSpec, given: dict[str, Any]) -> dict[str, Any]:
    """The pipeline's params: given ones checked and coerced (CLI strings), defaults added.

    Raises:
        karma.errors.ValidationError: unknown, missing or ill-typed, each named.
    """
    from karma.cli.params import coerce  # the CLI's `-p k=v` rules

    errors = []
    out: dict[str, Any] = {}
    for name in given:
        if name not in spec.params:
            errors.append(FieldError(field=f"params.{name}", reason="unknown pipeline param"))
    for name, param in spec.params.items():
        definition = param.definition(name)
        if name not in given or given[name] is None:
            if param.required:
                errors.append(FieldError(field=f"params.{name}", reason="required, not given"))
            elif param.default is not None:
                out[name] = copy.deepcopy(param.default)
            continue
        value = given[name]
        if isinstance(value, str):
            try:
                value = coerce(definition, value)
            except ValueError as exc:
                errors.append(FieldError(field=f"params.{name}", reason=str(exc)))
                continue
        if problem := definition.problem_with(value):
            errors.append(FieldError(field=f"params.{name}", reason=problem))
        else:
            out[name] = value
    if errors:
        raise ValidationError(errors)
    return out


def redacted(spec: PipelineSpec, params: dict[str, Any]) -> dict[str, Any]:
    """The params with the secret ones' values replaced by `***`."""
    secret = {n for n, p in spec.params.items() if p.secret}
    return {k: (REDACTED if k in secret else v) for k, v in params.items()}


class Unknown(Exception):
    """An expression read a step's result that is not known yet."""

    def __init__(self, step_id: str) -> None:
        super().__init__(step_id)
        self.step_id = step_id


class _Names:
    """A mapping as expressions see it: `x.name` and `x['name']` read its keys, and only
    them (a key named like a dict method, `items`, is still the key)."""

    def __init__(self, values: dict[str, Any], *, unknown_is_pending: bool = False) -> None:
        self._values = values
        self._pending = unknown_is_pending

    def __getattr__(self, name: str) -> Any:
        return self[name]

    def __getitem__(self, name: str) -> Any:
        if name not in self._values:
            if self._pending:
                raise Unknown(name)
            raise KeyError(name)
        return _wrap(self._values[name])


def _wrap(value: Any) -> Any:
    return _Names(value) if isinstance(value, dict) else value


def evaluate(
    expression: str, params: dict[str, Any], steps: dict[str, Any], *, field: str = "expression"
) -> Any:
    """An expression's value over `params` and the steps' results (simpleeval, after
    `parse_expression` allowed it: no calls, no private names).

    Raises:
        Unknown: it reads a step not in `steps`.
        karma.errors.ValidationError: it cannot be evaluated (named `field`).
    """
    names = {"params": _Names(params), "steps": _Names(steps, unknown_is_pending=True)}
    try:
        parse_expression(expression)
        value = EvalWithCompoundTypes(names=names, functions={}).eval(expression)
    except Unknown:
        raise
    except Exception as exc:  # simpleeval's, arithmetic, missing keys, huge numbers
        reason = f"{expression!r}: {type(exc).__name__}: {exc}"[:500]
        raise ValidationError([FieldError(field=field, reason=reason)]) from exc
    if isinstance(value, _Names):
        value = value._values
    if callable(value):
        reason = f"{expression!r}: reads a method, not a value"
        raise ValidationError([FieldError(field=field, reason=reason)])
    return copy.deepcopy(value)


def resolve(
    value: Any, params: dict[str, Any], steps: dict[str, Any], *, field: str = "value"
) -> Any:
    """A param value with its references replaced (raises Unknown like `evaluate`)."""
    if isinstance(value, list):
        return [resolve(v, params, steps, field=field) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v, params, steps, field=field) for k, v in value.items()}
    if not isinstance(value, str) or not REFERENCE.search(value):
        return value
    whole = whole_reference(value)
    if whole is not None:
        return evaluate(whole, params, steps, field=field)

    def text(match: Any) -> str:
        found = evaluate(match.group(1), params, steps, field=field)
        try:
            return str(found)
        except ValueError as exc:  # an integer too long to print
            raise ValidationError([FieldError(field=field, reason=str(exc))]) from exc

    return REFERENCE.sub(text, value)


def _resolve_known(value: Any, params: dict[str, Any]) -> tuple[Any, set[str]]:
    """`value` with the references known now replaced (the others kept as written), and
    the steps the others wait for."""
    waiting: set[str] = set()
    if isinstance(value, list):
        parts = [_resolve_known(v, params) for v in value]
        return [p for p, _ in parts], waiting.union(*(w for _, w in parts))
    if isinstance(value, dict):
        items = {k: _resolve_known(v, params) for k, v in value.items()}
        return {k: p for k, (p, _) in items.items()}, waiting.union(*(w for _, w in items.values()))
    if not isinstance(value, str):
        return value, waiting

    def one(match: Any) -> str:
        try:
            return str(evaluate(match.group(1), params, {}))
        except Unknown as unknown:
            waiting.add(unknown.step_id)
            return str(match.group(0))
        except ValueError as exc:  # an integer too long to print
            raise ValidationError([FieldError(field="value", reason=str(exc))]) from exc

    return REFERENCE.sub(one, value), waiting


@dataclass
class StepPlan:
    id: str
    action: str
    wave: int
    needs: list[str]
    params: dict[str, Any]
    known_after: dict[str, list[str]] = field(default_factory=dict)  # param -> steps
    condition: str | None = None
    runs: bool | None = True  # None: decided by an earlier step's result
    reason: str = ""
    p50_ms: float | None = None
    p90_ms: float | None = None


@dataclass
class PipelinePlan:
    name: str
    params: dict[str, Any]
    waves: list[list[str]]
    steps: dict[str, StepPlan]
    spec_hash: str
    registry_hash: str
    p50_ms: float | None = None
    p90_ms: float | None = None

    @property
    def plan_hash(self) -> str:
        raw = json.dumps([self.spec_hash, self.registry_hash, self.params], sort_keys=True)
        return hashlib.sha256(raw.encode()).hexdigest()

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": self.params,
            "waves": self.waves,
            "steps": {k: vars(v) for k, v in self.steps.items()},
            "expected_p50_ms": self.p50_ms,
            "expected_p90_ms": self.p90_ms,
            "spec_hash": self.spec_hash,
            "registry_hash": self.registry_hash,
            "plan_hash": self.plan_hash,
        }


def spec_hash(spec: PipelineSpec) -> str:
    canonical = json.dumps(spec.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def registry_hash(spec: PipelineSpec, registry: Any) -> str:
    """What the plan assumed of the action types it uses."""
    used = sorted({s.action for s in spec.steps})
    metas = [registry.meta(a).model_dump_json() for a in used]
    return hashlib.sha256(json.dumps(metas).encode()).hexdigest()


def plan(
    spec: PipelineSpec,
    registry: Any,
    given: dict[str, Any],
    durations: dict[str, tuple[float, float]] | None = None,
) -> PipelinePlan:
    """The plan of a checked spec for `given` params; `durations`: p50/p90 ms per type.

    Raises:
        karma.errors.ValidationError: the spec or the params.
    """
    check(spec, registry)
    # A plan is shown and saved: secret values are never in it (nor in its hash).
    params = redacted(spec, pipeline_params(spec, given))
    durations = durations or {}
    order = waves(spec)
    planned: dict[str, StepPlan] = {}
    for wave, ids in enumerate(order):
        for step_id in ids:
            step = spec.step(step_id)
            meta = registry.meta(step.action)
            planned[step_id] = _step_plan(step, wave, params, planned, durations, meta)
    result = PipelinePlan(
        name=spec.name, params=params, waves=order, steps=planned,
        spec_hash=spec_hash(spec), registry_hash=registry_hash(spec, registry),
    )  # fmt: skip
    result.p50_ms, result.p90_ms = _critical_path(spec, planned)
    return result


def _step_plan(
    step: Step, wave: int, params: dict[str, Any], planned: dict[str, StepPlan],
    durations: dict[str, tuple[float, float]], meta: ActionMeta,
) -> StepPlan:  # fmt: skip
    out = StepPlan(id=step.id, action=step.action, wave=wave, needs=list(step.needs), params={})
    out.condition = step.if_
    for name, value in step.params.items():
        field = f"steps.{step.id}.params.{name}"
        definition = meta.param(name)
        try:
            out.params[name] = resolve(value, params, {}, field=field)
        except Unknown:
            out.params[name], waiting = _resolve_known(value, params)
            out.known_after[name] = sorted(waiting)
        else:
            problem = definition.problem_with(out.params[name]) if definition else None
            if problem and out.params[name] != REDACTED:  # a secret's type: checked at run
                raise ValidationError(
                    [FieldError(field=field, reason=f"resolves to a value that {problem}")]
                )
        if definition is not None and definition.secret and name not in out.known_after:
            out.params[name] = REDACTED  # a plan is shown and saved
    skipped_inputs = sorted(
        {s for waits in out.known_after.values() for s in waits if planned[s].runs is False}
    )
    if step.needs and all(planned[n].runs is False for n in step.needs):
        out.runs, out.reason = False, "every step it needs is skipped"
    elif skipped_inputs:
        out.runs = False
        out.reason = f"reads the outputs of skipped step {', '.join(skipped_inputs)}"
    elif step.if_ is not None:
        try:
            out.runs = bool(evaluate(step.if_, params, {}, field=f"steps.{step.id}.if"))
            out.reason = "" if out.runs else f"condition false: {step.if_}"
        except Unknown as unknown:
            out.runs, out.reason = None, f"decided after step {unknown.step_id}"
    if step.action in durations:
        out.p50_ms, out.p90_ms = durations[step.action]
    return out


def _critical_path(
    spec: PipelineSpec, planned: dict[str, StepPlan]
) -> tuple[float | None, float | None]:
    """The expected end of the whole: the longest path of steps that run (p50, p90)."""
    if any(p.runs is not False and p.p50_ms is None for p in planned.values()):
        return None, None
    finish: dict[str, tuple[float, float]] = {}
    for wave in waves(spec):
        for step_id in wave:
            p = planned[step_id]
            start = (
                max((finish[n][0] for n in p.needs), default=0.0),
                max((finish[n][1] for n in p.needs), default=0.0),
            )
            cost = (p.p50_ms or 0.0, p.p90_ms or 0.0) if p.runs is not False else (0.0, 0.0)
            finish[step_id] = (start[0] + cost[0], start[1] + cost[1])
    return max(f[0] for f in finish.values()), max(f[1] for f in finish.values())
