from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from karma.errors import ValidationError
from karma.meta import ActionMeta, ParamDefinition, ParamType
from karma.secrets import SEALED, SecretSealer, is_sealed
from karma.settings import Settings

META = ActionMeta(
    type="x",
    name="x",
    params=(
        ParamDefinition(name="user", type=ParamType.STRING),
        ParamDefinition(name="headers", type=ParamType.JSON, secret=True),
    ),
)


def test_only_secret_values_are_sealed_and_they_round_trip() -> None:
    sealer = SecretSealer(Fernet.generate_key())
    params = {"user": "ops", "headers": {"Authorization": "Bearer abc"}}
    sealed = sealer.seal(META, params)
    assert sealed["user"] == "ops"
    assert is_sealed(sealed["headers"])
    assert "Bearer abc" not in str(sealed)
    assert sealer.seal(META, sealed) == sealed  # sealing twice changes nothing
    assert sealer.unseal(sealed) == params


def test_a_value_sealed_with_another_key_is_a_field_error() -> None:
    sealed = SecretSealer(Fernet.generate_key()).seal(META, {"headers": {"a": "b"}})
    with pytest.raises(ValidationError) as caught:
        SecretSealer(Fernet.generate_key()).unseal(sealed)
    assert caught.value.errors[0].field == "params.headers"
    assert "KARMA_SECRETS_KEY" in caught.value.errors[0].reason
    with pytest.raises(ValidationError):
        SecretSealer(Fernet.generate_key()).unseal({"headers": {SEALED: "garbage"}})


def test_without_a_configured_key_one_is_kept_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    first = SecretSealer.from_settings(settings).seal(META, {"headers": 1})
    assert SecretSealer.from_settings(settings).unseal(first) == {"headers": 1}
    key_file = tmp_path / "secrets.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
