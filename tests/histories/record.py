"""Record the histories the replay test guards: `python -m tests.histories.record`.

Run it only when a deliberate, `workflow.patched`-guarded change needs new histories; keep
the old files so that running workflows recorded before the change still replay.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from karma.embedded.stack import with_free_ports
from karma.lifecycle import EventType
from karma.settings import Settings
from workers.embedded import EmbeddedKarma

HERE = Path(__file__).parent

SCENARIOS: dict[str, tuple[str, dict[str, object], bool]] = {
    "succeeded": ("log", {"message": "hello"}, True),
    "retried": ("demo.flaky", {"failures": 2}, True),
    "validation_failed": ("delay", {"seconds": -1}, False),
    "cancelled": ("delay", {"seconds": 60}, True),
}


async def record() -> None:
    settings = with_free_ports(Settings(), Path(tempfile.mkdtemp(prefix="karma-record-")))
    async with EmbeddedKarma(settings, persistent=False) as karma:
        for name, (action_type, params, validate) in SCENARIOS.items():
            handle = await karma.client.request(action_type, params, validate=validate)
            if name == "cancelled":
                async for event in handle.events(poll_interval=0.1):
                    if event.event_type is EventType.STARTED:
                        await handle.cancel()
                        break
            await handle.result()
            history = await karma.temporal.get_workflow_handle(handle.workflow_id).fetch_history()
            (HERE / f"{name}.json").write_text(history.to_json())
            print(f"recorded {name}: {len(history.events)} events")  # noqa: T201


if __name__ == "__main__":
    asyncio.run(record())
