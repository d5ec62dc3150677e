"""The component graph: components declared in YAML files of a config directory, each
with its dependencies, config, and the actions that deploy and reload it.

```yaml
# <dir>/components/api.yaml (a file may also hold a list under `components:`)
name: api
kind: service
depends_on: [database, cache]
config: {image: "api:1.8", replicas: 3}
runtime: [log_level]          # values per environment, from the parameter store
secrets: [db_password]        # the same, never shown, only given whole to secret params
deploy:
  action: log
  params: {message: "deploy ${{ config.image }} (${{ runtime.log_level }})"}
reload:
  action: log
  params: {message: "reload api"}
```

In action params, `${{ config.x }}` is replaced when the graph is built (config is in git,
never secret); `${{ runtime.x }}` becomes a param of the deploy pipeline (secret ones
sealed), filled from the parameter store of the environment.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from karma.errors import FieldError, ValidationError, field_errors
from karma.pipelines.spec import REFERENCE
from karma.yaml_input import load_mapping

NAME = r"^[a-z][a-z0-9_-]{0,55}$"  # its steps are deploy-<name> and reload-<name>
KEY = r"^[a-z_][a-z0-9_]{0,62}$"
MAX_COMPONENTS = 500
MAX_FILE_BYTES = 1 << 20


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ComponentAction(_Strict):
    action: str
    params: dict[str, Any] = Field(default_factory=dict)


class Component(_Strict):
    name: str = Field(pattern=NAME)
    kind: str = Field(default="component", max_length=64)
    description: str = ""
    depends_on: list[str] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict)
    runtime: list[str] = Field(default_factory=list, description="runtime value names")
    secrets: list[str] = Field(default_factory=list, description="secret runtime value names")
    deploy: ComponentAction
    reload: ComponentAction | None = Field(
        default=None, description="run when something it depends on was deployed"
    )

    @model_validator(mode="after")
    def _keys(self) -> Component:
        for name in [*self.runtime, *self.secrets]:
            if not re.match(KEY, name):
                raise ValueError(f"runtime value {name!r}: lowercase letters, digits and _")
        both = sorted(set(self.runtime) & set(self.secrets))
        if both:
            raise ValueError(f"{', '.join(both)}: either runtime or secrets, not both")
        return self

    @property
    def values(self) -> list[str]:
        """Every runtime value it needs, secret or not."""
        return [*self.runtime, *self.secrets]

    def config_hash(self) -> str:
        """What its declaration says (not its runtime values): a change redeploys it."""
        declared = self.model_dump(mode="json", exclude={"description"})
        return hashlib.sha256(json.dumps(declared, sort_keys=True).encode()).hexdigest()


class Graph(BaseModel):
    components: dict[str, Component]
    sources: dict[str, str] = Field(default_factory=dict, description="component -> its file")

    def order(self) -> list[str]:
        """Every component after what it depends on (by name among equals); call
        `check_structure` first."""
        waiting = {n: set(c.depends_on) for n, c in self.components.items()}
        done: list[str] = []
        while waiting:
            ready = sorted(n for n, deps in waiting.items() if not deps - set(done))
            if not ready:
                raise ValueError("cycle")
            done += ready
            for n in ready:
                del waiting[n]
        return done

    def dependents(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {n: [] for n in self.components}
        for name, component in self.components.items():
            for dep in component.depends_on:
                if dep in out:
                    out[dep].append(name)
        return {n: sorted(d) for n, d in out.items()}

    def downstream(self, root: str) -> list[str]:
        """What depends on `root`, directly or not, in dependency order."""
        below = self.dependents()
        seen: set[str] = set()
        todo = [root]
        while todo:
            for name in below[todo.pop()]:
                if name not in seen:
                    seen.add(name)
                    todo.append(name)
        return [n for n in self.order() if n in seen]

    def edges(self) -> list[tuple[str, str]]:
        """(component, what it depends on), sorted."""
        return sorted((n, d) for n, c in self.components.items() for d in c.depends_on)


def parse_components(text: str, source: str) -> list[Component]:
    """The components of one YAML file (one mapping, or a list under `components:`).

    Raises:
        karma.errors.ValidationError: naming the file and the field.
    """
    document = load_mapping(text, source)
    items = document.get("components") if set(document) == {"components"} else [document]
    if not isinstance(items, list):
        raise ValidationError([FieldError(field=f"{source}: components", reason="a list")])
    out = []
    for index, item in enumerate(items):
        try:
            out.append(Component.model_validate(item))
        except PydanticValidationError as exc:
            where = source if len(items) == 1 else f"{source}[{index}]"
            raise ValidationError(
                [
                    FieldError(field=f"{where}: {e.field}", reason=e.reason)
                    for e in field_errors(exc)
                ]
            ) from exc
    return out


def load_graph(directory: Path) -> Graph:
    """Every component under `<directory>/components` (*.yaml, *.yml, sorted).

    Raises:
        karma.errors.ValidationError: a file that does not parse, a duplicate name.
    """
    folder = directory / "components"
    if not folder.is_dir():
        reason = f"no {folder} directory: components are YAML files there"
        raise ValidationError([FieldError(field="dir", reason=reason)])
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    components: dict[str, Component] = {}
    sources: dict[str, str] = {}
    errors: list[FieldError] = []
    for path in files:
        if path.stat().st_size > MAX_FILE_BYTES:
            errors.append(FieldError(field=str(path), reason=f"larger than {MAX_FILE_BYTES} B"))
            continue
        try:
            found = parse_components(path.read_text(encoding="utf-8"), str(path))
        except ValidationError as exc:
            errors += exc.errors
            continue
        for component in found:
            if component.name in components:
                reason = f"also declared in {sources[component.name]}"
                errors.append(FieldError(field=f"components.{component.name}", reason=reason))
            components[component.name] = component
            sources[component.name] = str(path)
    if len(components) > MAX_COMPONENTS:
        errors.append(FieldError(field="components", reason=f"more than {MAX_COMPONENTS}"))
    if errors:
        raise ValidationError(errors)
    return Graph(components=components, sources=sources)


def check_structure(graph: Graph) -> None:
    """Dependencies that exist, and no cycle (its path named).

    Raises:
        karma.errors.ValidationError: each naming `components.<name>.depends_on`.
    """
    errors = []
    for name, component in sorted(graph.components.items()):
        for dep in component.depends_on:
            field = f"components.{name}.depends_on"
            if dep == name:
                errors.append(FieldError(field=field, reason="depends on itself"))
            elif dep not in graph.components:
                errors.append(FieldError(field=field, reason=f"no component {dep!r}"))
    if errors:
        raise ValidationError(errors)
    try:
        graph.order()
    except ValueError:
        cycle = _cycle(graph)
        field = f"components.{cycle[0]}.depends_on"
        reason = f"cycle: {' -> '.join(cycle)}"
        raise ValidationError([FieldError(field=field, reason=reason)]) from None


def _cycle(graph: Graph) -> list[str]:
    ordered: set[str] = set()
    waiting = {n: set(c.depends_on) for n, c in graph.components.items()}
    changed = True
    while changed:
        changed = False
        for n, deps in list(waiting.items()):
            if deps <= ordered:
                ordered.add(n)
                del waiting[n]
                changed = True
    current = min(waiting)
    path: list[str] = []
    seen: dict[str, int] = {}
    while current not in seen:
        seen[current] = len(path)
        path.append(current)
        current = min(d for d in graph.components[current].depends_on if d in waiting)
    return [*path[seen[current] :], current]


def runtime_references(value: Any) -> set[str]:
    """The runtime value names `${{ runtime.x }}` in a param value reads."""
    found: set[str] = set()
    if isinstance(value, str):
        for expression in REFERENCE.findall(value):
            match = re.fullmatch(r"runtime\.([a-z_][a-z0-9_]*)", expression.strip())
            if match:
                found.add(match.group(1))
    elif isinstance(value, list):
        for v in value:
            found |= runtime_references(v)
    elif isinstance(value, dict):
        for v in value.values():
            found |= runtime_references(v)
    return found
