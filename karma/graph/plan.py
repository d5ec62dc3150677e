"""Building a graph version for an environment, diffing a component against what was
last deployed, and the deploy pipeline: deploy it, then reload what depends on it in
dependency order."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, BeforeValidator, Field

from karma.errors import FieldError, ValidationError
from karma.graph.model import Component, Graph, check_structure, runtime_references
from karma.graph.store import ENV, ParameterStore, Values, check_env
from karma.pipelines.plan import check
from karma.pipelines.spec import REFERENCE, PipelineParam, PipelineSpec, Step, whole_reference

MASKED = "***"
PARAM_CHARS = 63  # a pipeline param's name
DEPLOY_PREFIX, RELOAD_PREFIX = "deploy-", "reload-"


class NodeVersion(BaseModel):
    name: str
    kind: str
    depends_on: list[str]
    config: dict[str, Any]
    config_hash: str
    runtime: dict[str, str] = Field(description="name -> fingerprint (never the value)")
    secrets: list[str] = Field(default_factory=list)
    runtime_hash: str


def _instant(value: Any) -> Any:
    """A time is an ISO 8601 string (or a datetime), never a bare number."""
    if not isinstance(value, str | datetime):
        raise ValueError("an ISO 8601 date-time")  # noqa: TRY004 - pydantic wants ValueError
    return value


class GraphVersion(BaseModel):
    """A graph as built for one environment: what `karma graph build` stores."""

    version: str = Field(
        pattern=r"^[0-9a-f]{32}$",
        description="a hash of the nodes: the same graph, the same version",
    )
    env: str = Field(pattern=ENV.pattern)
    built_at: Annotated[AwareDatetime, BeforeValidator(_instant)]
    nodes: list[NodeVersion]
    edges: list[tuple[str, str]] = Field(description="(component, what it depends on)")

    def node(self, name: str) -> NodeVersion | None:
        return next((n for n in self.nodes if n.name == name), None)


Digest = Callable[[str], str]


def unkeyed(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint(env: str, component: str, name: str, value: str, digest: Digest = unkeyed) -> str:
    """Says whether a runtime value changed, without saying what it is (`digest`: keyed
    with the secrets key outside tests, so a weak secret cannot be guessed from it)."""
    return digest("\x00".join(("karma-runtime", env, component, name, value)))[:16]


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def build(
    graph: Graph,
    env: str,
    store: ParameterStore,
    registry: Any,
    *,
    values: Values | None = None,
    digest: Digest = unkeyed,
) -> GraphVersion:
    """The graph's version in `env`, once everything about it checks.

    Raises:
        karma.errors.ValidationError: cycles, missing dependencies, unknown action types,
            bad action params, runtime values missing from the store or not declared,
            config references to keys the config lacks; each naming its component.
    """
    check_env(env)
    check_structure(graph)
    if values is None:
        values = store.values(env)
    errors: list[FieldError] = []
    for name, component in sorted(graph.components.items()):
        errors += _component_errors(component, values.get(name, {}), store.where, env)
    if errors:
        raise ValidationError(errors)
    _check_actions(graph, registry)
    nodes = []
    for name in graph.order():
        component = graph.components[name]
        given = values.get(name, {})
        runtime = {k: fingerprint(env, name, k, given[k], digest) for k in sorted(component.values)}
        nodes.append(
            NodeVersion(
                name=name,
                kind=component.kind,
                depends_on=sorted(component.depends_on),
                config=component.config,
                config_hash=component.config_hash(),
                runtime=runtime,
                secrets=sorted(component.secrets),
                runtime_hash=_hash(runtime),
            )
        )
    edges = graph.edges()
    version = _hash([env, [n.model_dump(mode="json") for n in nodes], edges])[:32]
    return GraphVersion(
        version=version, env=env, built_at=datetime.now(UTC), nodes=nodes, edges=edges
    )


def _component_errors(
    component: Component, given: dict[str, str], where: str, env: str
) -> list[FieldError]:
    errors = []
    for key in component.values:
        if key not in given:
            kind = "secrets" if key in component.secrets else "runtime"
            field = f"components.{component.name}.{kind}.{key}"
            errors.append(FieldError(field=field, reason=f"no value for {env} in {where}"))
    actions = [("deploy", component.deploy)]
    if component.reload is not None:
        actions.append(("reload", component.reload))
    for role, action in actions:
        for param, value in action.params.items():
            field = f"components.{component.name}.{role}.params.{param}"
            for key in sorted(runtime_references(value) - set(component.values)):
                reason = f"runtime.{key} is not declared in runtime or secrets"
                errors.append(FieldError(field=field, reason=reason))
            for expression in _references(value):
                root, _, key = expression.partition(".")
                if root == "config" and key not in component.config:
                    errors.append(FieldError(field=field, reason=f"config has no {key!r}"))
                elif root not in ("config", "runtime") or not key:
                    reason = f"{expression!r}: use config.<key> or runtime.<name>"
                    errors.append(FieldError(field=field, reason=reason))
            errors += _secret_errors(component, value, field)
    return errors


def _references(value: Any) -> list[str]:
    if isinstance(value, str):
        return [e.strip() for e in REFERENCE.findall(value)]
    if isinstance(value, list):
        return [r for v in value for r in _references(v)]
    if isinstance(value, dict):
        return [r for v in value.values() for r in _references(v)]
    return []


def _secret_errors(component: Component, value: Any, field: str) -> list[FieldError]:
    secret = runtime_references(value) & set(component.secrets)
    if secret and whole_reference(value) is None:
        reason = "a secret is only given whole (${{ runtime.x }}), never inside text"
        return [FieldError(field=field, reason=reason)]
    return []


def _check_actions(graph: Graph, registry: Any) -> None:
    """Every deploy and reload action, with its params, as a pipeline step would run it."""
    steps = []
    params = _Params()
    for name in graph.order():
        component = graph.components[name]
        steps.append(_step(component, "deploy", [], params))
        if component.reload is not None:
            steps.append(_step(component, "reload", [], params))
    spec = PipelineSpec(name="graph", steps=steps, params=params.spec)
    try:
        check(spec, registry)
    except ValidationError as exc:
        raise ValidationError([_as_component_error(e) for e in exc.errors]) from exc


def _as_component_error(error: FieldError) -> FieldError:
    match = re.match(
        rf"steps\.({DEPLOY_PREFIX}|{RELOAD_PREFIX})(.+?)\.(action|params)(.*)", error.field
    )
    if match is None:
        return error
    role, name, rest, tail = match.groups()
    return FieldError(field=f"components.{name}.{role[:-1]}.{rest}{tail}", reason=error.reason)


class _Params:
    """The deploy pipeline's params: one per runtime value its steps read."""

    def __init__(self) -> None:
        self.spec: dict[str, PipelineParam] = {}
        self.source: dict[str, tuple[str, str]] = {}  # param -> (component, name)

    def add(self, component: Component, key: str) -> str:
        name = f"{component.name.replace('-', '_')}__{key}"
        if len(name) > PARAM_CHARS or self.source.get(name, (component.name, key)) != (
            component.name,
            key,
        ):  # too long, or a-b and a_b both there: a name of its own
            suffix = hashlib.sha256(f"{component.name}\x00{key}".encode()).hexdigest()[:10]
            name = f"{name[: PARAM_CHARS - 11]}_{suffix}"
        self.spec[name] = PipelineParam(required=True, secret=key in component.secrets)
        self.source[name] = (component.name, key)
        return name


def _render(component: Component, value: Any, params: _Params) -> Any:
    """A param value with config references replaced and runtime ones made pipeline params."""
    if isinstance(value, list):
        return [_render(component, v, params) for v in value]
    if isinstance(value, dict):
        return {k: _render(component, v, params) for k, v in value.items()}
    if not isinstance(value, str):
        return value
    whole = whole_reference(value)
    if whole is not None and whole.strip().startswith("config."):
        return component.config[whole.strip().removeprefix("config.")]

    def one(match: re.Match[str]) -> str:
        root, _, key = match.group(1).strip().partition(".")
        if root == "config":
            found = component.config[key]
            return found if isinstance(found, str) else json.dumps(found)
        return "${{ params." + params.add(component, key) + " }}"

    return REFERENCE.sub(one, value)


def _step(component: Component, role: str, needs: list[str], params: _Params) -> Step:
    action = component.deploy if role == "deploy" else component.reload
    assert action is not None
    prefix = DEPLOY_PREFIX if role == "deploy" else RELOAD_PREFIX
    return Step(
        id=f"{prefix}{component.name}",
        action=action.action,
        params=_render(component, action.params, params),
        needs=needs,
    )


class RuntimeChange(BaseModel):
    name: str
    change: str  # added, removed, changed
    value: str = Field(default="", description="the new value; *** for a secret")


class ChangePlan(BaseModel):
    """What deploying one component in one environment changes."""

    component: str
    env: str
    version: str = Field(description="the graph version it would deploy")
    deployed_version: str = Field(default="", description="'' when never deployed")
    deployed_by: str = Field(default="", description="the pipeline that last deployed it")
    config_changed: bool
    config_changes: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="key -> [before, after] (when the deployed graph is known)",
    )
    runtime_changes: list[RuntimeChange] = Field(default_factory=list)
    reloads: list[str] = Field(default_factory=list, description="in order")
    pipeline: PipelineSpec
    pipeline_params: dict[str, Any] = Field(default_factory=dict, description="secrets ***")
    compared: str = Field(default="", description="what the plan was compared with")

    @property
    def changed(self) -> bool:
        return self.config_changed or bool(self.runtime_changes) or not self.deployed_version


def plan_change(
    graph: Graph,
    built: GraphVersion,
    component: str,
    values: Values,
    deployed: dict[str, str] | None,
    deployed_graph: GraphVersion | None,
) -> tuple[ChangePlan, dict[str, Any]]:
    """The plan, and the deploy pipeline's params in clear (for running it, never shown).

    `deployed`: the tags of the last deploy whose deploy step succeeded (graph_version,
    graph_config_hash, graph_runtime_hash, pipeline id), None if there was none.

    Raises:
        karma.errors.ValidationError: an unknown component.
    """
    if component not in graph.components:
        known = ", ".join(sorted(graph.components)) or "none"
        raise ValidationError(
            [FieldError(field="component", reason=f"no component {component!r} (known: {known})")]
        )
    node = built.node(component)
    assert node is not None
    before = deployed_graph.node(component) if deployed_graph is not None else None
    config_changed = deployed is None or deployed.get("graph_config_hash") != node.config_hash
    config_changes: dict[str, list[Any]] = {}
    if before is not None and config_changed:
        for key in sorted(set(before.config) | set(node.config)):
            if before.config.get(key) != node.config.get(key):
                config_changes[key] = [before.config.get(key), node.config.get(key)]
    runtime_changes = _runtime_changes(node, before, deployed, values.get(component, {}))
    spec, params = deploy_pipeline(graph, component, built.env, values)
    secret = {n for n, p in spec.params.items() if p.secret}
    shown = {k: (MASKED if k in secret else v) for k, v in params.items()}
    planned = ChangePlan(
        component=component,
        env=built.env,
        version=built.version,
        deployed_version=(deployed or {}).get("graph_version", ""),
        deployed_by=(deployed or {}).get("pipeline_id", ""),
        config_changed=config_changed,
        config_changes=config_changes,
        runtime_changes=runtime_changes,
        reloads=[s.id.removeprefix(RELOAD_PREFIX) for s in spec.steps[1:]],
        pipeline=spec,
        pipeline_params=shown,
    )
    return planned, params


def _runtime_changes(
    node: NodeVersion,
    before: NodeVersion | None,
    deployed: dict[str, str] | None,
    given: dict[str, str],
) -> list[RuntimeChange]:
    if deployed is not None and deployed.get("graph_runtime_hash") == node.runtime_hash:
        return []
    old = before.runtime if before is not None else {}
    out = []
    for name in sorted(set(old) | set(node.runtime)):
        shown = MASKED if name in node.secrets else given.get(name, "")
        if name not in old:
            out.append(RuntimeChange(name=name, change="added", value=shown))
        elif name not in node.runtime:
            out.append(RuntimeChange(name=name, change="removed"))
        elif old[name] != node.runtime[name]:
            out.append(RuntimeChange(name=name, change="changed", value=shown))
    return out


def deploy_pipeline(
    graph: Graph, root: str, env: str, values: Values
) -> tuple[PipelineSpec, dict[str, Any]]:
    """Deploy `root`, then reload each component depending on it (directly or not) once
    everything between them was; one without a reload action passes the change on."""
    params = _Params()
    steps = [_step(graph.components[root], "deploy", [], params)]
    step_of: dict[str, list[str]] = {root: [steps[0].id]}  # what a dependent waits for
    for name in graph.downstream(root):
        component = graph.components[name]
        needs = sorted({s for dep in component.depends_on for s in step_of.get(dep, [])})
        if component.reload is None:
            step_of[name] = needs
            continue
        step = _step(component, "reload", needs, params)
        steps.append(step)
        step_of[name] = [step.id]
    spec = PipelineSpec(
        name=f"deploy-{root}"[:63],
        description=f"deploy {root} to {env} and reload what depends on it",
        params=params.spec,
        on_failure="compensate",
        steps=steps,
    )
    given = {name: values.get(c, {}).get(key) for name, (c, key) in params.source.items()}
    return spec, given
