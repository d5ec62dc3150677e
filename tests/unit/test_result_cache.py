"""The result cache's key (order-free, keyed, secret-free, versioned), its lookup through
the ledger's reader (TTL window, an unreadable ledger lets the action run), and which
types may cache."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet

from karma.meta import ActionMeta
from karma.result_cache import cache_key, look_up
from karma.secrets import SecretSealer


async def test_the_cache_key_ignores_param_order_and_hides_secrets() -> None:
    sealer = SecretSealer(Fernet.generate_key())
    meta = ActionMeta(type="t.look", name="look", idempotent=True, cache_ttl=timedelta(minutes=1))
    key = cache_key(sealer, meta, {"host": "a", "token": "s3cret"})
    assert key == cache_key(sealer, meta, {"token": "s3cret", "host": "a"})
    assert key != cache_key(sealer, meta, {"host": "a", "token": "other"})
    assert key != cache_key(
        SecretSealer(Fernet.generate_key()), meta, {"host": "a", "token": "s3cret"}
    )
    assert "s3cret" not in key and len(key) == 64
    assert key != cache_key(sealer, meta, {"host": "a", "token": "s3cret"}, tenant="other")
    sized = cache_key(sealer, meta, {"size": 2, "labels": {"n": [1.0]}})
    assert sized == cache_key(sealer, meta, {"size": 2.0, "labels": {"n": [1]}})
    assert sized != cache_key(sealer, meta, {"size": 2.5, "labels": {"n": [1]}})
    newer = meta.model_copy(update={"version": "2"})
    assert key != cache_key(sealer, newer, {"host": "a", "token": "s3cret"})

    asked: list[tuple[str, str, datetime]] = []

    class Ledger:
        async def cached(
            self, action_type: str, key: str, since: datetime
        ) -> tuple[str, dict[str, Any]] | None:
            asked.append((action_type, key, since))
            return ("act_1", {"n": 1}) if key == "hit" else None

    now = datetime(2026, 1, 1, tzinfo=UTC)
    found = await look_up(Ledger(), meta, "hit", now)
    assert found is not None and (found.action_id, found.outputs) == ("act_1", {"n": 1})
    assert await look_up(Ledger(), meta, "miss", now) is None
    assert asked[0] == ("t.look", "hit", now - timedelta(minutes=1))

    class Broken:
        async def cached(self, action_type: str, key: str, since: datetime) -> None:
            raise ConnectionError("ledger down")

    assert await look_up(Broken(), meta, "hit", now) is None  # the action simply runs


def test_only_idempotent_types_may_cache_their_results() -> None:
    with pytest.raises(ValueError, match="cache_ttl needs idempotent=True"):
        ActionMeta(type="t.x", name="x", cache_ttl=timedelta(minutes=1))
    with pytest.raises(ValueError, match="cache_ttl must be positive"):
        ActionMeta(type="t.x", name="x", idempotent=True, cache_ttl=timedelta(0))
