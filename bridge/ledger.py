"""The action ledger in ClickHouse: writing transitions and reading them back.

Blocking: clickhouse-connect's client is synchronous (and chdb's is in-process), so async
code calls these methods off the event loop.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from bridge.ledger_schema import ACTION_EVENTS_COLUMNS, schema_statements
from karma import names
from karma.errors import FieldError, ValidationError
from karma.events import ActionEvent


@dataclass(frozen=True)
class KafkaPosition:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class LedgerEvent:
    """A transition as read back from ClickHouse."""

    action_id: str
    seq: int
    ts: datetime
    event_type: str
    state: str
    action_type: str
    attempt: int
    error_type: str
    error_message: str
    attrs: dict[str, Any]


MAX_ATTEMPT = 2**16 - 1  # UInt16


def ledger_row(event: ActionEvent, position: KafkaPosition) -> list[Any]:
    """One `action_events` row, columns in ACTION_EVENTS_COLUMNS order.

    Raises:
        karma.errors.ValidationError: a value the ledger's columns cannot hold.
    """
    attrs = event.attrs
    error = attrs.get("error") or {}
    if not isinstance(error, dict):
        raise ValidationError([FieldError(field="attrs.error", reason="must be an object")])
    attempt = attrs.get("attempt") or 0
    if not isinstance(attempt, int) or not 0 <= attempt <= MAX_ATTEMPT:
        reason = f"must be an integer from 0 to {MAX_ATTEMPT}, got {str(attempt)[:40]!r}"
        raise ValidationError([FieldError(field="attrs.attempt", reason=reason)])
    state = event.event_type.state
    return [
        event.event_id,
        event.action_id,
        event.seq,
        event.ts,
        event.event_type.value,
        state.value if state is not None else "",
        event.tags.get("action", attrs.get("command", "")),
        event.entity_id,
        event.correlation_id,
        event.idempotency_key,
        event.tags.get("tenant", ""),
        event.tags.get("priority", ""),
        attempt,
        str(error.get("type", "")),
        str(error.get("message", "")),
        event.tags,
        json.dumps(attrs, separators=(",", ":"), sort_keys=True),
        event.source.system,
        position.topic,
        position.partition,
        position.offset,
    ]


def _ledger_event(row: Sequence[Any]) -> LedgerEvent:
    action_id, seq, ts, event_type, state, action_type, attempt, error_type, message, attrs = row
    return LedgerEvent(
        action_id=action_id,
        seq=seq,
        ts=ts,
        event_type=event_type,
        state=state,
        action_type=action_type,
        attempt=attempt,
        error_type=error_type,
        error_message=message,
        attrs=json.loads(attrs),
    )


class Ledger:
    """Reads and writes the ledger tables through one clickhouse-connect client."""

    def __init__(self, client: Client, database: str = names.LEDGER_DATABASE) -> None:
        self._client = client
        self.database = database
        self._events = f"{database}.{names.TABLE_ACTION_EVENTS}"
        self._current = f"{database}.{names.TABLE_ACTION_STATE_CURRENT}"

    @classmethod
    def open(cls, dsn: str, database: str = names.LEDGER_DATABASE) -> Ledger:
        """Connect (`chdb:///path` is the embedded engine; one process owns a path)."""
        return cls(clickhouse_connect.get_client(dsn=dsn), database)

    def close(self) -> None:
        self._client.close()

    def ensure_schema(self) -> None:
        for statement in schema_statements(self.database):
            self._client.command(statement)

    def known_event_ids(self, action_ids: Sequence[str]) -> set[str]:
        if not action_ids:
            return set()
        result = self._client.query(
            f"SELECT event_id FROM {self._events} WHERE action_id IN %(ids)s",
            parameters={"ids": sorted(set(action_ids))},
        )
        return {row[0] for row in result.result_rows}

    def write(self, rows: Sequence[list[Any]]) -> int:
        """Insert the rows whose event id is not in the ledger yet; return how many."""
        fresh: dict[str, list[Any]] = {}
        for row in rows:
            fresh.setdefault(row[0], row)
        known = self.known_event_ids([row[1] for row in fresh.values()])
        new_rows = [row for event_id, row in fresh.items() if event_id not in known]
        if new_rows:
            self._client.insert(self._events, new_rows, column_names=ACTION_EVENTS_COLUMNS)
        return len(new_rows)

    def transitions(self, action_ids: Sequence[str] | None = None) -> list[LedgerEvent]:
        """Transitions in (action, seq) order, for the given actions or all of them."""
        where, parameters = "", {}
        if action_ids is not None:
            where, parameters = "WHERE action_id IN %(ids)s", {"ids": list(action_ids)}
        result = self._client.query(
            f"""SELECT action_id, seq, ts, event_type, state, action_type, attempt,
                       error_type, error_message, attrs
                FROM {self._events} FINAL {where}
                ORDER BY action_id, seq""",
            parameters=parameters,
        )
        return [_ledger_event(row) for row in result.result_rows]

    def count_events(self, action_ids: Sequence[str]) -> int:
        """Rows as stored (no FINAL): a duplicate would count twice."""
        result = self._client.query(
            f"SELECT count() FROM {self._events} WHERE action_id IN %(ids)s",
            parameters={"ids": list(action_ids)},
        )
        return int(result.result_rows[0][0])

    def current_states(self, action_ids: Sequence[str]) -> dict[str, str]:
        result = self._client.query(
            f"SELECT action_id, state FROM {self._current} FINAL WHERE action_id IN %(ids)s",
            parameters={"ids": list(action_ids)},
        )
        return {row[0]: row[1] for row in result.result_rows}
