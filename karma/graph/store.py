"""Runtime values per environment: a parameter store. The default is a directory of YAML
files, one per environment (`<dir>/params/<env>.yaml`: component -> name -> value); AWS
SSM Parameter Store is the other (`<prefix>/<env>/<component>/<name>`, SecureString
decrypted), with boto3 installed (`pip install karma-actions[ssm]`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Protocol

from karma.errors import FieldError, ValidationError
from karma.yaml_input import load_mapping

ENV = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
Values = dict[str, dict[str, str]]  # component -> name -> value


def check_env(env: str) -> str:
    if not ENV.match(env):
        reason = "an environment is lowercase letters, digits, - and _ (e.g. dev, prod)"
        raise ValidationError([FieldError(field="env", reason=reason)])
    return env


class ParameterStore(Protocol):
    @property
    def where(self) -> str:
        """Where the values come from, for messages."""

    def values(self, env: str) -> Values:
        """Every component's runtime values in `env`."""


class FileParameterStore:
    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def path(self, env: str) -> Path:
        return self._directory / "params" / f"{check_env(env)}.yaml"

    @property
    def where(self) -> str:
        return str(self._directory / "params")

    def values(self, env: str) -> Values:
        path = self.path(env)
        if not path.is_file():
            return {}
        document = load_mapping(path.read_text(encoding="utf-8"), str(path))
        out: Values = {}
        errors = []
        for component, values in document.items():
            if not isinstance(values, dict):
                errors.append(FieldError(field=f"{path}: {component}", reason="a mapping"))
                continue
            out[str(component)] = {str(k): _text(v) for k, v in values.items()}
        if errors:
            raise ValidationError(errors)
        return out


def _text(value: Any) -> str:
    return (
        value
        if isinstance(value, str)
        else str(value).lower()
        if isinstance(value, bool)
        else str(value)
    )


class SsmParameterStore:
    """`<prefix>/<env>/<component>/<name>` in AWS SSM Parameter Store."""

    def __init__(self, prefix: str, client: Any | None = None) -> None:
        self._prefix = "/" + prefix.strip("/")
        self._client = client

    @property
    def where(self) -> str:
        return f"ssm:{self._prefix}"

    def _ssm(self) -> Any:
        if self._client is None:
            try:
                import boto3
            except ImportError as exc:
                reason = "the ssm parameter store needs boto3: pip install karma-actions[ssm]"
                raise ValidationError([FieldError(field="graph.store", reason=reason)]) from exc
            self._client = boto3.client("ssm")
        return self._client

    def values(self, env: str) -> Values:
        base = f"{self._prefix}/{check_env(env)}/"
        out: Values = {}
        pages = (
            self._ssm()
            .get_paginator("get_parameters_by_path")
            .paginate(Path=base, Recursive=True, WithDecryption=True)
        )
        for page in pages:
            for parameter in page.get("Parameters", []):
                rest = str(parameter["Name"]).removeprefix(base).split("/")
                if len(rest) == 2:
                    out.setdefault(rest[0], {})[rest[1]] = str(parameter["Value"])
        return out
