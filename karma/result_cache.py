"""The result cache of idempotent action types (`ActionMeta.cache_ttl`), kept in the ledger.

A success of a cacheable type records `cache_key` in its terminal transition: a keyed hash
(HMAC with the secrets key) of the tenant, the type, its version and the validated params,
so a secret value never appears in it and the key cannot be guessed from known params, and
a tenant never gets another's outputs. A later request
with the same key within the TTL ends SUCCEEDED at once with those outputs and
`cached_from` set, without calling the executor. The ledger is the store: the cache
survives restarts and every worker that reads the ledger shares it. Only a success that
ran is reused, so an answer from the cache never extends the TTL.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from karma.meta import ActionMeta
from karma.secrets import SecretSealer
from karma.workflow_io import CachedResult

log = logging.getLogger(__name__)
LOOKUP_TIMEOUT_S = 3.0


@runtime_checkable
class ResultCache(Protocol):
    async def cached(
        self, action_type: str, cache_key: str, since: datetime
    ) -> tuple[str, dict[str, Any]] | None:
        """The latest success with this key at or after `since`: (action id, outputs)."""


def cache_key(
    sealer: SecretSealer, meta: ActionMeta, params: Mapping[str, Any], tenant: str = ""
) -> str:
    """The key of a request: the same for the same tenant, type, version and params (in
    any order). A tenant never gets another tenant's outputs."""
    identity = {
        "tenant": tenant,
        "type": meta.type,
        "version": meta.version,
        "params": _canonical(dict(params)),
    }
    return sealer.digest(json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str))


def _canonical(value: Any) -> Any:
    """The same JSON for the same values: 1.0 and 1 are one number."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


async def look_up(
    cache: ResultCache | None, meta: ActionMeta, key: str, now: datetime
) -> CachedResult | None:
    """The cached result for `key`, or None (also when the ledger cannot be read now: the
    action then simply runs)."""
    if cache is None or meta.cache_ttl is None:
        return None
    try:
        async with asyncio.timeout(LOOKUP_TIMEOUT_S):  # a slow ledger is a miss
            found = await cache.cached(meta.type, key, now - meta.cache_ttl)
    except Exception as exc:  # noqa: BLE001 - an unreadable ledger must not stop requests
        log.warning("cannot read the ledger for %s's result cache: %r", meta.type, exc)
        return None
    if found is None:
        return None
    action_id, outputs = found
    return CachedResult(action_id=action_id, outputs=outputs)
