"""Messages other systems publish to Karma, and waiting for the actions they start."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from karma.status import ActionStatus
from workers.embedded import EmbeddedKarma


def envelope(event_type: str, ts: datetime | None = None, **fields: Any) -> bytes:
    ts = ts or datetime.now(UTC)
    return json.dumps({"ts": ts.isoformat(), "event_type": event_type, **fields}).encode()


def request(command: str, args: dict[str, Any], **fields: Any) -> bytes:
    attrs = {"command": command, "args": args, **fields.pop("attrs", {})}
    return envelope("action.requested", source={"system": "rules"}, attrs=attrs, **fields)


async def status_of(karma: EmbeddedKarma, action_id: str, timeout: float = 60) -> ActionStatus:
    """The action's final status, once the ingress has started it and it has ended."""
    handle = karma.client.handle(action_id)
    async with asyncio.timeout(timeout):
        while True:
            try:
                await handle.result()
                return await handle.status()
            except Exception:  # noqa: BLE001 - not started yet
                await asyncio.sleep(0.2)
