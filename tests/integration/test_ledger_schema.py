"""The ledger's schema evolves through numbered migrations: a ledger of the first version,
with rows in it, is brought up to date and its rows read back with the new columns."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from bridge.ledger import Ledger
from bridge.ledger_schema import ACTION_EVENTS, LATEST, MIGRATIONS
from karma import names
from tests.conftest import unique
from tests.support.checks import assert_in_ledger_once
from workers.embedded import EmbeddedKarma

FIRST_VERSION_COLUMNS = [c.name for c in ACTION_EVENTS if c.since == 1]


def first_version_ledger(karma: EmbeddedKarma, database: str) -> Ledger:
    ledger = Ledger(karma.ledger._client, database)
    assert ledger.migrate(upto=1) == [1]
    return ledger


async def test_a_first_version_ledger_is_migrated_and_keeps_its_rows(karma: EmbeddedKarma) -> None:
    database = unique("ledger_v1").replace("-", "_")
    ledger = await asyncio.to_thread(first_version_ledger, karma, database)
    client = karma.ledger._client
    table = f"{database}.{names.TABLE_ACTION_EVENTS}"
    old_columns = [c for c in FIRST_VERSION_COLUMNS if c != "ingested_at"]
    # A row as the first version wrote it: the terminal transition of a 1.5 s action.
    row = {
        "event_id": "act_old:4", "action_id": "act_old", "seq": 4, "ts": datetime.now(UTC),
        "event_type": "action.succeeded", "state": "SUCCEEDED", "action_type": "log",
        "entity_id": "", "correlation_id": "", "idempotency_key": "", "tenant": "",
        "priority": "normal", "attempt": 1, "error_type": "", "error_message": "",
        "tags": {"action": "log"}, "attrs": '{"attempt":1,"duration_ms":1500}',
        "source_system": "karma", "kafka_topic": "actions.result", "kafka_partition": 0,
        "kafka_offset": 9,
    }  # fmt: skip
    await asyncio.to_thread(
        client.insert, table, [[row[c] for c in old_columns]], column_names=old_columns
    )
    described = await asyncio.to_thread(client.query, f"DESCRIBE TABLE {table}")
    assert "duration_ms" not in [r[0] for r in described.result_rows]

    assert await asyncio.to_thread(ledger.migrate) == [m.version for m in MIGRATIONS[1:]]
    assert await asyncio.to_thread(ledger.migrations) == list(range(1, LATEST + 1))
    assert await asyncio.to_thread(ledger.migrate) == []  # each migration once
    described = await asyncio.to_thread(client.query, f"DESCRIBE TABLE {table}")
    assert [r[0] for r in described.result_rows] == [c.name for c in ACTION_EVENTS]
    [event] = await asyncio.to_thread(ledger.transitions, ["act_old"])
    assert (event.seq, event.state, event.duration_ms) == (4, "SUCCEEDED", 1500)  # backfilled
    await asyncio.to_thread(client.command, f"DROP DATABASE {database}")


async def test_the_session_ledger_is_at_the_latest_version(karma: EmbeddedKarma) -> None:
    handle = await karma.client.request("log", {"message": "timed"})
    outcome = await asyncio.wait_for(handle.result(), 60)
    assert await asyncio.to_thread(karma.ledger.migrations) == list(range(1, LATEST + 1))
    await assert_in_ledger_once(karma, [await handle.status()])
    rows = await asyncio.to_thread(karma.ledger.transitions, [handle.action_id])
    assert rows[-1].duration_ms == outcome.duration_ms > 0
