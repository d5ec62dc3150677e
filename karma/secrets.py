"""Sealing secret parameters so that only executors ever see them in clear.

Whoever builds a request (the client, later the Kafka ingress) encrypts the values of
parameters declared secret; the worker opens them only to validate and, in the activity,
right before the executor runs. Temporal history, the Web UI, SDK debug logs, events and
the ledger only ever hold the sealed form or `***`.

The key is `KARMA_SECRETS_KEY` (a Fernet key); without it, one is created in the data dir,
which is enough when client and worker share a machine (`karma dev`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping, Set
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from karma.errors import FieldError, ValidationError
from karma.meta import ActionMeta
from karma.settings import Settings

SEALED = "$karma_sealed"
KEY_FILE = "secrets.key"


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {SEALED}


class SecretSealer:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)
        self._key = key

    def digest(self, text: str) -> str:
        """A keyed hash (HMAC-SHA256): says whether a value changed, and cannot be
        reversed by guessing without the key."""
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretSealer:
        if settings.secrets_key is not None:
            return cls(settings.secrets_key.get_secret_value().encode())
        return cls(_key_file(settings.data_dir / KEY_FILE))

    def seal(self, meta: ActionMeta, params: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters with every secret value sealed (sealed ones stay as they are)."""
        return self.seal_named(meta.secret_params, params)

    def seal_named(self, secret: Set[str], params: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters with the values of those named `secret` sealed."""
        return {
            name: (
                {SEALED: self._fernet.encrypt(_encode(value)).decode()}
                if name in secret and value is not None and not is_sealed(value)
                else value
            )
            for name, value in params.items()
        }

    def unseal(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters in clear; a value sealed with another key is a field error."""
        errors: list[FieldError] = []
        opened: dict[str, Any] = {}
        for name, value in params.items():
            if not is_sealed(value):
                opened[name] = value
                continue
            try:
                opened[name] = _decode(self._fernet.decrypt(value[SEALED].encode()))
            except (InvalidToken, ValueError):
                errors.append(
                    FieldError(
                        field=f"params.{name}",
                        reason="sealed with another key (client and worker need the same "
                        "KARMA_SECRETS_KEY)",
                    )
                )
        if errors:
            raise ValidationError(errors)
        return opened


def _encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def _decode(raw: bytes) -> Any:
    return json.loads(raw)


def _key_file(path: Path) -> bytes:
    """Read the key file, creating it (owner-only) the first time."""
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    return key
