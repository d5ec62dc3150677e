"""A pipeline spec: a DAG of steps, each a registered action, in YAML.

```yaml
name: release
params:
  version: {type: string, required: true}
  dry_run: {type: boolean, default: false}
max_parallel: 4
on_failure: fail            # or compensate: undo completed transactional steps
steps:
  - id: build
    action: log
    params: {message: "building ${{ params.version }}"}
  - id: provision
    action: demo.provision
    needs: [build]
    if: "not params.dry_run"
    params: {service: "svc-${{ params.version }}"}
    on_failure: continue
```

A string param that is exactly one `${{ ... }}` takes the referenced value with its type;
references inside longer text are interpolated. References name `params.<name>` or
`steps.<id>.outputs.<name>`; conditions (`if`) are expressions over `params` and `steps`
evaluated by simpleeval, never `eval`.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from karma.errors import FieldError, ValidationError, field_errors
from karma.meta import ParamDefinition, ParamType

REFERENCE = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
STEP_ID = r"^[a-z][a-z0-9_-]{0,62}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PipelineParam(_Strict):
    type: ParamType = ParamType.STRING
    description: str = ""
    required: bool = False
    default: Any = None
    options: tuple[str, ...] = ()

    def definition(self, name: str) -> ParamDefinition:
        return ParamDefinition(
            name=name, type=self.type, description=self.description,
            required=self.required, default=self.default, options=self.options,
        )  # fmt: skip


class StepRetry(_Strict):
    max_attempts: int | None = Field(default=None, ge=1)


class Step(_Strict):
    id: str = Field(pattern=STEP_ID)
    action: str
    params: dict[str, Any] = Field(default_factory=dict)
    needs: list[str] = Field(default_factory=list)
    if_: str | None = Field(default=None, alias="if", description="a condition (simpleeval)")
    timeout_s: float | None = Field(default=None, gt=0, description="the whole step")
    retry: StepRetry | None = None
    on_failure: Literal["fail", "continue"] = "fail"

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class PipelineSpec(_Strict):
    name: str = Field(pattern=STEP_ID)
    description: str = ""
    params: dict[str, PipelineParam] = Field(default_factory=dict)
    max_parallel: int = Field(default=4, ge=1, le=64)
    on_failure: Literal["fail", "compensate"] = "fail"
    steps: list[Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> PipelineSpec:
        ids = [s.id for s in self.steps]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"step ids must be unique: {', '.join(twice)}")
        return self

    def step(self, step_id: str) -> Step:
        return next(s for s in self.steps if s.id == step_id)


def parse_spec(text: str, source: str = "pipeline") -> PipelineSpec:
    """A spec from YAML text.

    Raises:
        karma.errors.ValidationError: naming each field, or where YAML stopped.
    """
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else source
        raise ValidationError([FieldError(field=where, reason=f"not YAML: {exc}")]) from exc
    if not isinstance(document, dict):
        raise ValidationError([FieldError(field=source, reason="expected a mapping")])
    try:
        return PipelineSpec.model_validate(document)
    except PydanticValidationError as exc:
        raise ValidationError(field_errors(exc)) from exc


def load_spec(path: Path) -> PipelineSpec:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidationError([FieldError(field=str(path), reason=str(exc))]) from exc
    return parse_spec(text, str(path))


def references(value: Any) -> list[str]:
    """The expressions referenced by a param value (in nested lists and mappings too)."""
    if isinstance(value, str):
        return REFERENCE.findall(value)
    if isinstance(value, list):
        return [r for v in value for r in references(v)]
    if isinstance(value, dict):
        return [r for v in value.values() for r in references(v)]
    return []


def names_used(expression: str) -> list[tuple[str, ...]]:
    """The dotted names an expression reads (`steps.build.outputs.url` -> its parts).

    Raises:
        SyntaxError: an expression that does not parse.
    """
    tree = ast.parse(expression, mode="eval")
    found: list[tuple[str, ...]] = []
    for node in ast.walk(tree):
        chain: list[str] = []
        current: ast.AST = node
        while isinstance(current, ast.Attribute):
            chain.append(current.attr)
            current = current.value
        if isinstance(current, ast.Name) and (chain or isinstance(node, ast.Name)):
            parts = (current.id, *reversed(chain))
            if not any(p[: len(parts)] == parts for p in found):
                found = [p for p in found if parts[: len(p)] != p]
                found.append(parts)
    return found
