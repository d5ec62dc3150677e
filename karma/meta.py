"""Action metadata: what an action is, what it takes, what it returns and how it is run."""

from __future__ import annotations

import json
from datetime import timedelta
from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from karma.templates import compile_problem


class ParamType(StrEnum):
    STRING = "string"
    NUMBER = "number"
    BOOLEAN = "boolean"
    SELECT = "select"
    MULTISELECT = "multiselect"
    JSON = "json"
    TEMPLATE = "template"  # a Jinja2 string rendered against the action's context
    REF = "ref"  # names an object elsewhere; a resolver of its ref_kind checks it


class ExecutionMode(StrEnum):
    """How an executor runs (see ARCHITECTURE.md, 'Action kinds')."""

    SYNC = "sync"
    EVENT_DRIVEN = "event_driven"
    TRANSACTIONAL = "transactional"
    STATEFUL = "stateful"
    INTERACTIVE = "interactive"
    STREAMING = "streaming"


_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
MAX_REF_CHARS = 512


class ParamDefinition(BaseModel):
    """One parameter of an action.

    `secret` parameters reach the executor but are redacted from every event, log line
    and ClickHouse row.
    """

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=_NAME_PATTERN)
    type: ParamType
    description: str = ""
    required: bool = False
    default: Any = None
    min: float | None = Field(default=None, description="NUMBER only: smallest allowed value")
    max: float | None = Field(default=None, description="NUMBER only: largest allowed value")
    options: tuple[str, ...] = Field(default=(), description="SELECT/MULTISELECT choices")
    ref_kind: str = Field(
        default="",
        pattern=r"^([a-z][a-z0-9_]*)?$",
        description="REF only: the kind of object (model, cluster, endpoint...)",
    )
    secret: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        choice = self.type in (ParamType.SELECT, ParamType.MULTISELECT)
        if choice and not self.options:
            raise ValueError(f"parameter {self.name!r}: {self.type} needs options")
        if not choice and self.options:
            raise ValueError(f"parameter {self.name!r}: options only apply to select types")
        if self.type is not ParamType.NUMBER and (self.min is not None or self.max is not None):
            raise ValueError(f"parameter {self.name!r}: min/max only apply to numbers")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"parameter {self.name!r}: min is greater than max")
        if (self.type is ParamType.REF) != bool(self.ref_kind):
            raise ValueError(f"parameter {self.name!r}: ref_kind goes with (only) type ref")
        if self.required and self.default is not None:
            raise ValueError(f"parameter {self.name!r}: a required parameter has no default")
        if self.default is not None and (problem := self.problem_with(self.default)):
            raise ValueError(f"parameter {self.name!r}: default {problem}")
        return self

    def problem_with(self, value: Any) -> str | None:
        """Why `value` is not acceptable for this parameter, or None when it is."""
        match self.type:
            case ParamType.STRING:
                return None if isinstance(value, str) else "must be a string"
            case ParamType.TEMPLATE:
                if not isinstance(value, str):
                    return "must be a string (a Jinja2 template)"
                return compile_problem(value, reveal=not self.secret)
            case ParamType.REF:
                if not isinstance(value, str) or not value.strip():
                    return f"must name a {self.ref_kind}"
                return (
                    None if len(value) <= MAX_REF_CHARS else f"at most {MAX_REF_CHARS} characters"
                )
            case ParamType.BOOLEAN:
                return None if isinstance(value, bool) else "must be true or false"
            case ParamType.NUMBER:
                return self._number_problem(value)
            case ParamType.SELECT:
                return None if value in self.options else f"must be one of {list(self.options)}"
            case ParamType.MULTISELECT:
                if not isinstance(value, list | tuple):
                    return "must be a list"
                bad = [v for v in value if v not in self.options]
                if bad:
                    return f"{bad} not among {list(self.options)}"
                return "must not repeat a choice" if len(set(value)) != len(value) else None
            case ParamType.JSON:
                return _json_problem(value)

    def _number_problem(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "must be a number"
        if value != value or value in (float("inf"), float("-inf")):
            return "must be a finite number"
        if self.min is not None and value < self.min:
            return f"must be >= {self.min:g}"
        if self.max is not None and value > self.max:
            return f"must be <= {self.max:g}"
        return None


def _json_problem(value: Any) -> str | None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        return f"must be JSON-serialisable ({exc})"
    return None


class OutputDefinition(BaseModel):
    """One output an action reports on success."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=_NAME_PATTERN)
    type: ParamType = ParamType.STRING
    description: str = ""


class RetryPolicy(BaseModel):
    """How transient failures are retried: exponential backoff with a cap."""

    model_config = ConfigDict(frozen=True)

    max_attempts: int = Field(default=3, ge=1, description="attempts in all, the first included")
    initial_interval: timedelta = timedelta(seconds=1)
    backoff_coefficient: float = Field(default=2.0, ge=1.0)
    maximum_interval: timedelta = timedelta(seconds=60)

    @model_validator(mode="after")
    def _intervals(self) -> Self:
        if self.initial_interval <= timedelta(0):
            raise ValueError("initial_interval must be positive")
        if self.initial_interval > self.maximum_interval:
            raise ValueError("initial_interval must not exceed maximum_interval")
        return self

    def delay_after(self, attempt: int) -> timedelta:
        """The wait between attempt `attempt` (1-based) failing and the next one starting."""
        seconds = self.initial_interval.total_seconds() * self.backoff_coefficient ** (attempt - 1)
        return min(timedelta(seconds=seconds), self.maximum_interval)


class ExecutorLimits(BaseModel):
    """Bounds on one attempt beyond its wall-clock `timeout`. A breach ends the attempt
    as a permanent `limit_exceeded` error naming the limit.

    `max_output_bytes` bounds the JSON of the outputs an attempt returns (checked by Karma
    for every executor). `memory_mb` and `cpu_seconds` are enforced as rlimits on child
    processes by the executors that start them (`command`, and any that opt in through
    `karma.actions._process.run(limits=...)`).
    """

    model_config = ConfigDict(frozen=True)

    max_output_bytes: int | None = Field(default=None, ge=1)
    memory_mb: int | None = Field(default=None, ge=1, description="address space, MiB")
    cpu_seconds: int | None = Field(default=None, ge=1, description="CPU time, seconds")


class ActionMeta(BaseModel):
    """Everything Karma knows about an action type before running it."""

    model_config = ConfigDict(frozen=True)

    type: str = Field(pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
    version: str = "1"
    name: str
    description: str = ""
    category: str = "general"
    icon: str = ""
    color: str = ""
    mode: ExecutionMode = ExecutionMode.SYNC
    timeout: timedelta = Field(
        default=timedelta(minutes=5), description="longest a single attempt may run"
    )
    heartbeat_timeout: timedelta = Field(
        default=timedelta(seconds=10),
        description="how soon a lost worker is noticed and the attempt retried",
    )
    idempotent: bool = False
    required_services: tuple[str, ...] = ()
    params: tuple[ParamDefinition, ...] = ()
    outputs: tuple[OutputDefinition, ...] = ()
    retry: RetryPolicy = RetryPolicy()
    limits: ExecutorLimits = ExecutorLimits()
    cache_ttl: timedelta | None = Field(
        default=None,
        description="idempotent types: a request matching (type, version, params) an action "
        "that succeeded this recently ends at once with that action's outputs",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        for kind, names in (
            ("parameter", [p.name for p in self.params]),
            ("output", [o.name for o in self.outputs]),
        ):
            seen: set[str] = set()
            for name in names:
                if name in seen:
                    raise ValueError(f"action {self.type!r}: duplicate {kind} {name!r}")
                seen.add(name)
        if self.timeout <= timedelta(0) or self.heartbeat_timeout <= timedelta(0):
            raise ValueError(f"action {self.type!r}: timeouts must be positive")
        if self.cache_ttl is not None:
            if not self.idempotent:
                raise ValueError(f"action {self.type!r}: cache_ttl needs idempotent=True")
            if self.cache_ttl <= timedelta(0):
                raise ValueError(f"action {self.type!r}: cache_ttl must be positive")
        return self

    def param(self, name: str) -> ParamDefinition | None:
        return next((p for p in self.params if p.name == name), None)

    @property
    def secret_params(self) -> frozenset[str]:
        return frozenset(p.name for p in self.params if p.secret)
