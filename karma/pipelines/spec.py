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
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator
from pydantic import ValidationError as PydanticValidationError

from karma.errors import FieldError, ValidationError, field_errors
from karma.meta import ParamDefinition, ParamType
from karma.yaml_input import load_mapping

REFERENCE = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
MAX_STEPS = 500
PARAM_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
STEP_ID = r"^[a-z][a-z0-9_-]{0,62}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PipelineParam(_Strict):
    type: ParamType = ParamType.STRING
    description: str = ""
    required: bool = False
    default: Any = None
    options: tuple[str, ...] = ()
    secret: bool = Field(
        default=False, description="sealed by the client; referenced only whole, by a secret"
    )

    def definition(self, name: str) -> ParamDefinition:
        return ParamDefinition(
            name=name, type=self.type, description=self.description,
            required=self.required, default=self.default, options=self.options,
            secret=self.secret,
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
    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)
    _by_id: dict[str, Step] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _unique(self) -> PipelineSpec:
        counts = Counter(s.id for s in self.steps)
        twice = sorted(i for i, n in counts.items() if n > 1)
        if twice:
            raise ValueError(f"step ids must be unique: {', '.join(twice)}")
        for name, param in self.params.items():
            if not PARAM_NAME.match(name):
                raise ValueError(f"params.{name}: a name is lowercase letters, digits and _")
            try:
                param.definition(name)
            except PydanticValidationError as exc:
                reasons = "; ".join(e["msg"] for e in exc.errors())
                raise ValueError(f"params.{name}: {reasons}") from None
        return self

    def step(self, step_id: str) -> Step:
        if not self._by_id:
            self._by_id.update({s.id: s for s in self.steps})
        return self._by_id[step_id]


def parse_spec(text: str, source: str = "pipeline") -> PipelineSpec:
    """A spec from YAML text.

    Raises:
        karma.errors.ValidationError: naming each field, or where YAML stopped.
    """
    document = load_mapping(text, source)
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


def whole_reference(value: Any) -> str | None:
    """The expression of a value that is exactly one `${{ ... }}` (it keeps its type)."""
    if not isinstance(value, str):
        return None
    found = REFERENCE.findall(value)
    # One reference, and nothing around it: "${{ a }} and ${{ b }}" is text.
    if len(found) == 1 and REFERENCE.fullmatch(value.strip()):
        return str(found[0])
    return None


def references(value: Any) -> list[str]:
    """The expressions referenced by a param value (in nested lists and mappings too)."""
    if isinstance(value, str):
        return REFERENCE.findall(value)
    if isinstance(value, list):
        return [r for v in value for r in references(v)]
    if isinstance(value, dict):
        return [r for v in value.values() for r in references(v)]
    return []


# What an expression may be made of: values, names, operators; no calls, no lambdas,
# no comprehensions (an expression reads, it never acts).
_ALLOWED = (
    ast.Expression, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.IfExp,
    ast.Name, ast.Attribute, ast.Subscript, ast.Constant, ast.List, ast.Tuple, ast.Load,
    ast.And, ast.Or, ast.Not, ast.USub, ast.UAdd, ast.Add, ast.Sub, ast.Mult, ast.Div,
    ast.FloorDiv, ast.Mod, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In,
    ast.NotIn, ast.Is, ast.IsNot,
)  # fmt: skip
MAX_EXPRESSION_CHARS = 1000


class ExpressionError(ValueError):
    """An expression that is not allowed (or does not parse)."""


def _chain(node: ast.AST) -> tuple[str, ...] | None:
    """`a.b['c'].d` as ("a", "b", "c", "d"); None for anything else."""
    parts: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            parts.append(node.slice.value)
            node = node.value
        elif isinstance(node, ast.Name):
            return (node.id, *reversed(parts))
        else:
            return None


def parse_expression(expression: str) -> ast.Expression:
    """The expression's tree, if it is made only of what expressions may use.

    Raises:
        ExpressionError: it does not parse, is too long, or uses what is not allowed
            (calls, lambdas, comprehensions, names starting with `_`, subscripts that are
            not constant names).
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression, mode="eval")
    except (SyntaxError, RecursionError, MemoryError, ValueError) as exc:
        raise ExpressionError(f"does not parse ({getattr(exc, 'msg', exc)})") from exc
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise ExpressionError(f"{type(node).__name__} is not allowed in an expression")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise ExpressionError(f"{node.attr!r}: names starting with _ are not allowed")
        constant = isinstance(node, ast.Subscript) and isinstance(
            node.slice, ast.Constant | ast.UnaryOp
        )
        if isinstance(node, ast.Subscript) and _chain(node) is None and not constant:
            raise ExpressionError("a subscript must be a constant ('name' or a number)")
    return tree


def names_used(expression: str) -> list[tuple[str, ...]]:
    """The names an expression reads, longest first (`steps.build.outputs.url`, or
    `steps['warm-up'].outputs.x`, as its parts); a bare root counts as read whole.

    Raises:
        ExpressionError: as `parse_expression`.
    """
    tree = parse_expression(expression)
    found: list[tuple[str, ...]] = []
    inner: set[int] = set()  # nodes inside a chain already taken
    for node in ast.walk(tree):
        if id(node) in inner:
            continue
        parts = _chain(node)
        if parts is None:
            continue
        found.append(parts)
        current = node
        while isinstance(current, ast.Attribute | ast.Subscript):
            current = current.value
            inner.add(id(current))
    return found
